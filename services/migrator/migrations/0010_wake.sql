-- Workers are woken by notifications instead of polling (stella_core::wake): every change that
-- gives a worker something to do notifies the channel `stella_wake` with a topic, delivered when
-- the transaction commits. Topics: `job:<kind>` (a job is queued, or one ends and frees a slot
-- of its kind's concurrency), `schedule` (a schedule is created or changed, or a scheduled job
-- ends), `verdicts` (a scan is imported or a policy version added). Expand-only: a previous
-- release ignores the notifications and keeps polling.
CREATE FUNCTION stella.wake_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stella_wake', 'job:' || NEW.kind);
    IF NEW.schedule IS NOT NULL AND NEW.status IN ('succeeded', 'failed') THEN
        PERFORM pg_notify('stella_wake', 'schedule');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_wake_insert AFTER INSERT ON stella.jobs
    FOR EACH ROW WHEN (NEW.status = 'queued') EXECUTE FUNCTION stella.wake_job();
CREATE TRIGGER jobs_wake_update AFTER UPDATE OF status, run_after ON stella.jobs
    FOR EACH ROW WHEN (NEW.status = 'queued' OR (OLD.status = 'running' AND NEW.status <> 'running'))
    EXECUTE FUNCTION stella.wake_job();

CREATE FUNCTION stella.wake_topic() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stella_wake', TG_ARGV[0]);
    RETURN NULL;
END $$;

-- Per row, not per statement: the scheduler's own tick is an UPDATE of schedules, and a
-- statement trigger would fire for a tick that changed nothing and wake the scheduler forever.
CREATE TRIGGER schedules_wake AFTER INSERT OR UPDATE OF every, next_run_at ON stella.schedules
    FOR EACH ROW EXECUTE FUNCTION stella.wake_topic('schedule');
CREATE TRIGGER scans_wake AFTER INSERT ON stella.scans
    FOR EACH STATEMENT EXECUTE FUNCTION stella.wake_topic('verdicts');
CREATE TRIGGER policies_wake AFTER INSERT ON stella.policies
    FOR EACH STATEMENT EXECUTE FUNCTION stella.wake_topic('verdicts');
