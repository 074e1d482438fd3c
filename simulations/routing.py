"""Websocket routes of the simulations app (aggregated in imbue/routing.py)."""

from django.urls import path

from simulations.consumers import ConversationConsumer

websocket_urlpatterns = [
    path("ws/conversations/<int:conversation_id>/", ConversationConsumer.as_asgi()),
]
