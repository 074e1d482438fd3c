"""Participants who joined before 0005 were given their study code as their resume key, and that
code is the pseudonym in every export, on the dashboard and in the admin: anyone holding an export
could continue, read and withdraw them. Each such participant gets a fresh, unguessable key; their
study code (what the research records are joined by) is unchanged.

The code they wrote down no longer continues them on another device: an export cannot be called
back, so a key that is in one cannot be made safe any other way. The browser they joined with
still takes them back (its session holds them), the new key is shown to superusers in the admin,
and a recruitment link with the same Prolific session still works (see README, upgrade notes)."""

from django.db import migrations
from django.db.models import F

from study.models import new_participant_code

BATCH = 500


def give_fresh_keys(apps, schema_editor):
    Participant = apps.get_model("study", "Participant")
    exposed = list(
        Participant.objects.filter(resume_key=F("code")).order_by("pk").values_list("pk", flat=True)
    )
    if not exposed:
        return
    # Neither another participant's key nor anyone's exported code (79 bits make either
    # unlikely; the check makes it impossible).
    taken = set(Participant.objects.values_list("resume_key", flat=True))
    taken |= set(Participant.objects.values_list("code", flat=True))
    for start in range(0, len(exposed), BATCH):
        batch = []
        for pk in exposed[start : start + BATCH]:
            key = new_participant_code()
            while key in taken:
                key = new_participant_code()
            taken.add(key)
            batch.append(Participant(pk=pk, resume_key=key))
        Participant.objects.bulk_update(batch, ["resume_key"])


class Migration(migrations.Migration):
    dependencies = [
        ("study", "0005_participant_resume_key"),
    ]

    # Back to 0005 keeps the fresh keys: the exported codes must not become keys again.
    operations = [
        migrations.RunPython(give_fresh_keys, migrations.RunPython.noop, elidable=True),
    ]
