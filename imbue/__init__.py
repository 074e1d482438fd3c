# Load the Celery app with Django, so `.delay()` in the web process uses the configured broker.
from imbue.celery import app as celery_app

__all__ = ("celery_app",)
