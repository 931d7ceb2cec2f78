-- The console's Welcome wizard: shown on a user's first sign-in until they finish it.
ALTER TABLE stella.users ADD COLUMN onboarded_at TIMESTAMPTZ;
