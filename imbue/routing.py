"""All websocket routes, one list per app."""

from django.urls import path

from feedback.routing import websocket_urlpatterns as feedback_routes
from imbue.consumers import PingConsumer
from simulations.routing import websocket_urlpatterns as simulation_routes

websocket_urlpatterns = [
    path("ws/ping/", PingConsumer.as_asgi()),
    *simulation_routes,
    *feedback_routes,
]
