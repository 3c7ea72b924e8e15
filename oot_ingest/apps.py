from django.apps import AppConfig


class OotIngestConfig(AppConfig):
    name = "oot_ingest"
    verbose_name = "OOT ingestion"
    default_auto_field = "django.db.models.BigAutoField"
