"""Load the demo content `make run` needs: the situations library and the open demo study."""

from django.core.management.base import BaseCommand

from simulations.situations import load_library
from study.services import create_default_study

DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = "Create the library situations and the open demo study; safe to run again."

    def handle(self, *args: object, **options: object) -> None:
        created, total = load_library()
        self.stdout.write(f"Situations library: {created} created, {total} in the file.")
        study, made = create_default_study(slug=DEMO_SLUG, name="Demo: practising DEAR MAN")
        self.stdout.write(
            f"Demo study {'created' if made else 'already there'} ({study.get_status_display()}): "
            f"participants start at /s/{study.slug}/"
        )
