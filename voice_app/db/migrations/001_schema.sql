-- The multi-tenant schema. Every tenant-owned row carries tenant_id, and row-level security hides
-- other tenants' rows from the application role (voice_app_rw, which every pooled connection
-- switches to with SET ROLE) even when a query forgets its tenant filter. The app sets
-- `app.tenant_id` per transaction. The schema owner (who runs migrations) is not restricted, which
-- is what lets the narrow SECURITY DEFINER lookups at the end see across tenants.

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'voice_app_rw') THEN
    CREATE ROLE voice_app_rw NOLOGIN NOSUPERUSER NOBYPASSRLS;
  END IF;
END $$;

-- The login user must be able to SET ROLE voice_app_rw (superusers already can).
DO $$
BEGIN
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    EXECUTE format('GRANT voice_app_rw TO %I', current_user);
  END IF;
END $$;

CREATE FUNCTION app_tenant() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid
$$;

CREATE TABLE tenants (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
  name        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  account_number  text NOT NULL UNIQUE CHECK (account_number ~ '^[0-9]{6,12}$'),
  display_name    text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 120),
  phone_e164      text CHECK (phone_e164 ~ '^\+[1-9][0-9]{6,14}$'),
  email           text,
  pin_hash        text NOT NULL,
  timezone        text NOT NULL DEFAULT 'UTC',
  role            text NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'admin')),
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id)
);
CREATE INDEX users_phone ON users (phone_e164);
CREATE INDEX users_tenant_name ON users (tenant_id, lower(display_name));

CREATE TABLE teams (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 80),
  created_by  uuid,
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX teams_tenant_name ON teams (tenant_id, lower(name));

CREATE TABLE team_members (
  tenant_id   uuid NOT NULL,
  team_id     uuid NOT NULL,
  user_id     uuid NOT NULL,
  role        text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'member')),
  added_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (team_id, user_id),
  FOREIGN KEY (tenant_id, team_id) REFERENCES teams (tenant_id, id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX team_members_user ON team_members (user_id);

CREATE TABLE todos (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     uuid NOT NULL,
  owner_id      uuid NOT NULL,
  assignee_id   uuid,
  team_id       uuid,
  title         text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
  notes         text NOT NULL DEFAULT '' CHECK (length(notes) <= 4000),
  status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done')),
  priority      text NOT NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
  due_at        timestamptz,
  completed_at  timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (tenant_id, owner_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, assignee_id) REFERENCES users (tenant_id, id) ON DELETE SET NULL (assignee_id),
  FOREIGN KEY (tenant_id, team_id) REFERENCES teams (tenant_id, id) ON DELETE SET NULL (team_id)
);
CREATE INDEX todos_owner ON todos (tenant_id, owner_id, status);
CREATE INDEX todos_assignee ON todos (tenant_id, assignee_id, status);
CREATE INDEX todos_team ON todos (tenant_id, team_id, status);
CREATE INDEX todos_due ON todos (tenant_id, due_at) WHERE status = 'open';

CREATE TABLE calendar_accounts (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id         uuid NOT NULL,
  user_id           uuid NOT NULL,
  provider          text NOT NULL DEFAULT 'google' CHECK (provider IN ('google')),
  account_email     text,
  calendar_id       text NOT NULL DEFAULT 'primary',
  token_ciphertext  bytea NOT NULL,   -- Fernet(JSON {access_token, refresh_token, expires_at})
  scopes            text NOT NULL DEFAULT '',
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, user_id, provider),
  FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE calendar_events (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL,
  user_id      uuid NOT NULL,
  external_id  text NOT NULL,
  title        text NOT NULL DEFAULT '',
  starts_at    timestamptz NOT NULL,
  ends_at      timestamptz NOT NULL,
  location     text NOT NULL DEFAULT '',
  synced_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, user_id, external_id),
  FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

-- A call exists before we know who is calling (the PIN comes later), so tenant_id may be NULL;
-- such rows are invisible to the application role and written through the `record_call_*`
-- functions below.
CREATE TABLE calls (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  call_sid      text NOT NULL UNIQUE,
  tenant_id     uuid REFERENCES tenants(id) ON DELETE CASCADE,
  user_id       uuid,
  channel       text NOT NULL DEFAULT 'pstn' CHECK (channel IN ('pstn', 'browser', 'local', 'simulator')),
  from_number   text NOT NULL DEFAULT '',
  to_number     text NOT NULL DEFAULT '',
  status        text NOT NULL DEFAULT 'initiated',
  started_at    timestamptz NOT NULL DEFAULT now(),
  answered_at   timestamptz,
  ended_at      timestamptz,
  duration_s    integer,
  outcome       text,          -- completed | transferred | abandoned | failed | locked_out ...
  last_sequence integer NOT NULL DEFAULT -1,   -- Twilio's SequenceNumber, for idempotent retries
  updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX calls_tenant_started ON calls (tenant_id, started_at DESC);

CREATE TABLE messages (
  id           bigserial PRIMARY KEY,
  tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  call_sid     text NOT NULL,
  role         text NOT NULL CHECK (role IN ('user', 'assistant', 'tool', 'system')),
  content      text NOT NULL,
  interrupted  boolean NOT NULL DEFAULT false,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_call ON messages (tenant_id, call_sid, id);

CREATE TABLE tool_calls (
  id           bigserial PRIMARY KEY,
  tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  user_id      uuid NOT NULL,
  call_sid     text,
  tool         text NOT NULL,
  arguments    jsonb NOT NULL DEFAULT '{}',
  outcome      text NOT NULL CHECK (outcome IN ('ok', 'invalid', 'not_found', 'error', 'denied')),
  detail       text NOT NULL DEFAULT '',
  duration_ms  integer NOT NULL DEFAULT 0,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tool_calls_tenant ON tool_calls (tenant_id, created_at DESC);

CREATE TABLE agents (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  email          text NOT NULL UNIQUE,
  display_name   text NOT NULL,
  password_hash  text NOT NULL,
  extension      text NOT NULL DEFAULT '2001',
  created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE security_events (
  id          bigserial PRIMARY KEY,
  tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  user_id     uuid,
  kind        text NOT NULL,   -- pin_lockout | pin_changed | ...
  detail      jsonb NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX security_events_tenant ON security_events (tenant_id, created_at DESC);

-- Row-level security: one policy per tenant-owned table, the same predicate everywhere.
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['tenants', 'users', 'teams', 'team_members', 'todos',
      'calendar_accounts', 'calendar_events', 'calls', 'messages', 'tool_calls', 'agents',
      'security_events'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO voice_app_rw', t);
    IF t = 'tenants' THEN
      EXECUTE 'CREATE POLICY tenant_isolation ON tenants TO voice_app_rw USING (id = app_tenant()) WITH CHECK (id = app_tenant())';
    ELSE
      EXECUTE format('CREATE POLICY tenant_isolation ON %I TO voice_app_rw USING (tenant_id = app_tenant()) '
                     'WITH CHECK (tenant_id = app_tenant())', t);
    END IF;
  END LOOP;
END $$;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO voice_app_rw;
GRANT EXECUTE ON FUNCTION app_tenant() TO voice_app_rw;

-- The few lookups that must cross tenants, each narrow and SECURITY DEFINER (runs as the owner,
-- which bypasses RLS only inside the function): who owns this account number or phone, which
-- agent has this e-mail, and recording a call before its tenant is known.
CREATE FUNCTION auth_account(p_account text)
RETURNS TABLE (tenant_id uuid, user_id uuid, pin_hash text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT u.tenant_id, u.id, u.pin_hash FROM users u WHERE u.account_number = p_account
$$;

CREATE FUNCTION auth_accounts_by_phone(p_phone text)
RETURNS TABLE (tenant_id uuid, user_id uuid, account_number text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT u.tenant_id, u.id, u.account_number FROM users u WHERE u.phone_e164 = p_phone LIMIT 5
$$;

CREATE FUNCTION auth_agent(p_email text)
RETURNS TABLE (tenant_id uuid, agent_id uuid, password_hash text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT a.tenant_id, a.id, a.password_hash FROM agents a WHERE a.email = lower(p_email)
$$;

CREATE FUNCTION record_call_event(
  p_call_sid text, p_status text, p_sequence integer, p_from text, p_to text,
  p_channel text, p_duration integer, p_at timestamptz)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  INSERT INTO calls (call_sid, channel, from_number, to_number, status, started_at)
  VALUES (p_call_sid, p_channel, coalesce(p_from, ''), coalesce(p_to, ''), p_status, p_at)
  ON CONFLICT (call_sid) DO NOTHING;
  -- Twilio retries and may deliver out of order: only a newer sequence number moves status on,
  -- while timestamps are filled once.
  UPDATE calls SET
    status       = CASE WHEN p_sequence > last_sequence THEN p_status ELSE status END,
    last_sequence = greatest(last_sequence, p_sequence),
    answered_at  = CASE WHEN p_status = 'in-progress' THEN coalesce(answered_at, p_at) ELSE answered_at END,
    ended_at     = CASE WHEN p_status IN ('completed', 'busy', 'no-answer', 'canceled', 'failed')
                        THEN coalesce(ended_at, p_at) ELSE ended_at END,
    duration_s   = coalesce(p_duration, duration_s),
    outcome      = CASE WHEN p_status IN ('busy', 'no-answer', 'canceled', 'failed') AND outcome IS NULL
                        THEN p_status
                        WHEN p_status = 'completed' AND outcome IS NULL THEN 'completed'
                        ELSE outcome END,
    updated_at   = now()
  WHERE call_sid = p_call_sid;
END $$;

CREATE FUNCTION claim_call(p_call_sid text, p_tenant uuid, p_user uuid, p_channel text)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
  INSERT INTO calls (call_sid, tenant_id, user_id, channel, status)
  VALUES (p_call_sid, p_tenant, p_user, p_channel, 'in-progress')
  ON CONFLICT (call_sid) DO UPDATE SET tenant_id = p_tenant, user_id = p_user,
    channel = p_channel, updated_at = now()
  WHERE calls.tenant_id IS NULL OR calls.tenant_id = p_tenant
$$;

REVOKE ALL ON FUNCTION auth_account(text), auth_accounts_by_phone(text), auth_agent(text),
  record_call_event(text, text, integer, text, text, text, integer, timestamptz),
  claim_call(text, uuid, uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth_account(text), auth_accounts_by_phone(text), auth_agent(text),
  record_call_event(text, text, integer, text, text, text, integer, timestamptz),
  claim_call(text, uuid, uuid, text) TO voice_app_rw;
