from celery import shared_task

from imbue import services


@shared_task(acks_late=True, reject_on_worker_lost=True)
def ping(reply_channel: str, text: str) -> None:
    services.answer_ping(reply_channel=reply_channel, text=text)
