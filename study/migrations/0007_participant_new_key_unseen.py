"""Participants who joined before study/0005 and were shown a code (those who joined by the open
link: `source` "direct") wrote it down as the way back on another device; study/0006 replaced it
with a fresh key they have never seen. Each such participant is marked so that the next study
page they open shows the new key once (study.views._page).

Who joined before 0005 is read from when 0005 was applied (django_migrations): every participant
who started before then had their code as their key, and 0006 gave every one of them a new key.
On a database where 0005, 0006 and this run together, that is everyone already there."""

from django.db import migrations, models
from django.db.migrations.recorder import MigrationRecorder


def mark_those_with_a_replaced_key(apps, schema_editor):
    Participant = apps.get_model("study", "Participant")
    applied = (
        MigrationRecorder(schema_editor.connection)
        .migration_qs.filter(app="study", name="0005_participant_resume_key")
        .values_list("applied", flat=True)
        .first()
    )
    if applied is None:
        return
    Participant.objects.filter(source="direct", started_at__lt=applied).update(new_key_unseen=True)


class Migration(migrations.Migration):
    dependencies = [
        ("study", "0006_fresh_resume_keys"),
    ]

    operations = [
        migrations.AddField(
            model_name="participant",
            name="new_key_unseen",
            field=models.BooleanField(
                default=False,
                help_text="Their resume key was replaced and they have not seen it yet.",
            ),
        ),
        migrations.RunPython(mark_those_with_a_replaced_key, migrations.RunPython.noop),
    ]
