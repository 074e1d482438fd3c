"""Participants continue on another device with a key of their own, no longer with the code that
staff and exports see. Participants who joined before keep the code they wrote down as their key
(it stays valid for them); everyone after gets a separate one."""

from django.db import migrations, models

import study.models


def keep_the_codes_written_down(apps, schema_editor):
    Participant = apps.get_model("study", "Participant")
    Participant.objects.filter(resume_key__isnull=True).update(resume_key=models.F("code"))


class Migration(migrations.Migration):
    dependencies = [
        ("study", "0004_study_limits"),
    ]

    operations = [
        migrations.AddField(
            model_name="participant",
            name="resume_key",
            field=models.CharField(max_length=20, null=True),
        ),
        migrations.RunPython(keep_the_codes_written_down, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="participant",
            name="resume_key",
            field=models.CharField(
                default=study.models.new_participant_code, max_length=20, unique=True
            ),
        ),
    ]
