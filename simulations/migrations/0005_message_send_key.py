"""A learner message carries the page's key for the press of Send that made it, unique within its
conversation where set, so a frame sent again stores nothing twice (simulations.services)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("simulations", "0004_conversation_rate_limits"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="send_key",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddConstraint(
            model_name="message",
            constraint=models.UniqueConstraint(
                condition=models.Q(("send_key", ""), _negated=True),
                fields=("conversation", "send_key"),
                name="message_send_key_unique",
            ),
        ),
    ]
