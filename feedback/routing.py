"""The feedback socket: one per open conversation page, where expert ratings arrive."""

from django.urls import path

from feedback.consumers import FeedbackConsumer

websocket_urlpatterns = [
    path("ws/conversations/<int:conversation_id>/feedback/", FeedbackConsumer.as_asgi()),
]
