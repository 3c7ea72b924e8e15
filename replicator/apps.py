from django.apps import AppConfig


class ReplicatorConfig(AppConfig):
    name = "replicator"
    verbose_name = "Replication to ClickHouse"
    default_auto_field = "django.db.models.BigAutoField"
