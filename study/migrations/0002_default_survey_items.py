"""The published trial's eight survey items, so a fresh database can run a study at once."""

from django.db import migrations


def add_default_items(apps, schema_editor):
    from study import surveys

    SurveyItem = apps.get_model("study", "SurveyItem")
    for order, item in enumerate(surveys.DEFAULT_ITEMS):
        SurveyItem.objects.get_or_create(
            key=item.key,
            version=item.version,
            defaults={
                "construct": item.construct,
                "label": item.label,
                "wording": item.wording,
                "scale_low": item.scale.low,
                "scale_high": item.scale.high,
                "scale_labels": list(item.scale.labels),
                "reverse_scored": item.reverse_scored,
                "order": order * 10,
                "is_active": True,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("study", "0001_initial")]

    operations = [migrations.RunPython(add_default_items, migrations.RunPython.noop)]
