-- Every append-only table refuses TRUNCATE, not only UPDATE and DELETE row by row: applied
-- events, rate cards, FX rates and cash-out transitions had the row triggers but not this one,
-- so the schema's owner could empty them in one statement.
CREATE TRIGGER applied_events_no_truncate BEFORE TRUNCATE ON applied_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER rate_cards_no_truncate BEFORE TRUNCATE ON rate_cards
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER fx_rates_no_truncate BEFORE TRUNCATE ON fx_rates
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER cashout_transitions_no_truncate BEFORE TRUNCATE ON cashout_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();
