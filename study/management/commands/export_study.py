"""Export a study's data and codebook into a folder, as the dashboard's download does."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction

from study import codebook, exports
from study.models import Study
from study.permissions import Right, has_right


class Command(BaseCommand):
    help = (
        "Write a study's export (csv: long.csv, wide.csv, messages.csv, codebook.csv; json: "
        "study.json, codebook.csv) into a folder. Pseudonymous unless --include-recruitment-ids. "
        "Every export goes into the audit log."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The study's slug (its link is /s/<slug>/).")
        parser.add_argument("--format", choices=sorted(codebook.FORMATS), default="csv")
        parser.add_argument("--out", required=True, type=Path, help="Folder to write into.")
        parser.add_argument(
            "--include-recruitment-ids",
            action="store_true",
            help="Add Prolific ids and participant labels (they identify people on Prolific).",
        )
        parser.add_argument(
            "--user",
            default="",
            help="Staff username to record as the exporter (must hold the export right).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        study = Study.objects.filter(slug=options["slug"]).first()
        if study is None:
            raise CommandError(f"No study with the slug {options['slug']!r}.")
        actor = None
        if options["user"]:
            actor = get_user_model().objects.filter(username=options["user"]).first()
            if actor is None or not has_right(actor, study, Right.EXPORT):
                raise CommandError(f"{options['user']!r} may not export this study.")
        export_options = codebook.Options(
            include_recruitment_ids=options["include_recruitment_ids"]
        )
        fmt = options["format"]
        out: Path = options["out"]
        # One snapshot for every file: rows written while the export runs appear in none of
        # them, so the files agree with each other (the server-side cursors live in it too).
        nested = connection.in_atomic_block  # (tests run inside a transaction already)
        with transaction.atomic():
            if not nested:
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            written = exports.write_files(study, out, fmt, export_options)
        exports.record_export(
            actor,
            study,
            what=fmt,
            files=[path.name for path in written],
            options=export_options,
            via="command",
            os_user=getpass.getuser(),
            out=str(out.resolve()),
        )
        for path in written:
            self.stdout.write(f"{path} ({path.stat().st_size:,} bytes)")
        ids = "with recruitment ids" if export_options.include_recruitment_ids else "pseudonymous"
        self.stdout.write(self.style.SUCCESS(f"Exported {study.slug} as {fmt}, {ids}."))
