from django.urls import path

from feedback import views

app_name = "feedback"

urlpatterns = [
    path("c/<int:conversation_id>/request/", views.request_feedback, name="request"),
]
