"""The audit log is append-only in the database itself, not only in the admin.

UPDATE and DELETE on imbue_auditentry raise an error for every role, including the one the web
application connects as. TRUNCATE stays possible for the database owner: test runs empty tables
with it, and anyone able to truncate could also drop the trigger.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION imbue_auditentry_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on imbue_auditentry refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER imbue_auditentry_append_only
    BEFORE UPDATE OR DELETE ON imbue_auditentry
    FOR EACH ROW EXECUTE FUNCTION imbue_auditentry_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS imbue_auditentry_append_only ON imbue_auditentry;
DROP FUNCTION IF EXISTS imbue_auditentry_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("imbue", "0002_audit_log_and_adverse_events")]

    operations = [migrations.RunSQL(CREATE, DROP)]
