"""Load the demo content `make run` needs: the situations library (and the demo study)."""

from django.core.management.base import BaseCommand

from simulations.situations import load_library


class Command(BaseCommand):
    help = "Create the library situations and the open demo study; safe to run again."

    def handle(self, *args: object, **options: object) -> None:
        created, total = load_library()
        self.stdout.write(f"Situations library: {created} created, {total} in the file.")
