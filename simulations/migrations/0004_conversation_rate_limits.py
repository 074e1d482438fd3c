"""A study's own rate limits travel on its chats (copied when each opens)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('simulations', '0003_skillsuggestion'),
    ]

    operations = [
        migrations.AddField(
            model_name='conversation',
            name='feedback_per_minute',
            field=models.PositiveSmallIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='conversation',
            name='messages_per_minute',
            field=models.PositiveSmallIntegerField(blank=True, null=True),
        ),
    ]
