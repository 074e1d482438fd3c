"""Drafts keep the partner's words they answered; the drafts of a conversation's last sent turn,
which were never linked to the message they became (linking happened only at the next turn's
feedback request, and a last turn has none), are linked now. Sending links them from now on."""

from django.db import migrations, models


def link_sent_drafts(apps, schema_editor) -> None:
    Draft = apps.get_model("feedback", "Draft")
    Message = apps.get_model("simulations", "Message")
    conversations = (
        Draft.objects.filter(sent_message__isnull=True)
        .values_list("conversation_id", flat=True)
        .distinct()
    )
    for conversation_id in conversations.iterator():
        sent = list(
            Message.objects.filter(conversation_id=conversation_id, role="learner")
            .order_by("seq")
            .values_list("pk", flat=True)
        )
        for turn, message_id in enumerate(sent, start=1):
            Draft.objects.filter(
                conversation_id=conversation_id, turn=turn, sent_message__isnull=True
            ).update(sent_message_id=message_id)


class Migration(migrations.Migration):
    dependencies = [
        ("feedback", "0001_initial"),
        ("simulations", "0004_conversation_rate_limits"),
    ]

    operations = [
        migrations.AddField(
            model_name="draft",
            name="partner_said",
            field=models.TextField(
                blank=True,
                help_text="The partner's last words when this draft was written.",
                null=True,
            ),
        ),
        migrations.RunPython(link_sent_drafts, migrations.RunPython.noop),
    ]
