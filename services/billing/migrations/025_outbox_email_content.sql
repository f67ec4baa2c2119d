-- The outbox keeps each email as the notifier's EmailContent message in protobuf's JSON form (proto field
-- names): the kind's fields move from "data" to the object named by the kind. Amounts in minor units and
-- ISO 8601 dates are already valid in that form.
UPDATE billing.email_outbox
SET request = (request - 'kind' - 'data') || jsonb_build_object(kind, request -> 'data')
WHERE request ? 'data';
