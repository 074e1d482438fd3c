from django.contrib import admin

from simulations.models import Conversation, EmotionCheckin, Learner, Message, Situation


@admin.register(Situation)
class SituationAdmin(admin.ModelAdmin):
    list_display = ("__str__", "category", "difficulty", "is_library", "is_active", "created_at")
    list_filter = ("category", "difficulty", "is_active", ("learner", admin.EmptyFieldListFilter))
    search_fields = ("title", "situation", "goal", "slug")
    readonly_fields = ("learner", "created_at", "updated_at")

    @admin.display(boolean=True, description="Library")
    def is_library(self, obj: Situation) -> bool:
        return obj.is_library


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    can_delete = False
    fields = ("seq", "role", "text", "strategies", "state", "resistance", "ratings", "mastery")
    readonly_fields = fields
    ordering = ("seq",)


class CheckinInline(admin.TabularInline):
    model = EmotionCheckin
    extra = 0
    can_delete = False
    readonly_fields = ("phase", "after_seq", "intensity", "emotion", "created_at")


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("pk", "situation", "kind", "status", "partner_engine", "created_at")
    list_filter = ("kind", "status", "partner_engine")
    readonly_fields = (
        "learner",
        "situation",
        "partner_brief",
        "partner_engine",
        "created_at",
        "ended_at",
    )
    inlines = [MessageInline, CheckinInline]


@admin.register(Learner)
class LearnerAdmin(admin.ModelAdmin):
    list_display = ("public_id", "created_at", "last_seen_at")
    readonly_fields = ("public_id", "resume_code", "created_at", "last_seen_at")
