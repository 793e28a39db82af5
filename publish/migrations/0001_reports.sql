-- Fleet reports, schema version 1. SQL common to SQLite and PostgreSQL (one code path).

-- Every accepted report, as received (the page's history).
CREATE TABLE reports (
    machine_id TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    channel TEXT NOT NULL,
    grp TEXT,
    event TEXT NOT NULL,
    os TEXT NOT NULL,
    generation BIGINT NOT NULL,
    pending TEXT,
    phase TEXT NOT NULL,
    error TEXT,
    fleet_position DOUBLE PRECISION
);
CREATE INDEX reports_channel_time ON reports (channel, time_ms);

-- The latest report of each machine (by its time).
CREATE TABLE machines (
    machine_id TEXT PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    channel TEXT NOT NULL,
    grp TEXT,
    event TEXT NOT NULL,
    os TEXT NOT NULL,
    generation BIGINT NOT NULL,
    pending TEXT,
    phase TEXT NOT NULL,
    error TEXT,
    fleet_position DOUBLE PRECISION
);
CREATE INDEX machines_channel ON machines (channel, os);

-- Each machine's latest outcome for each release it tried (staged, booted, good, failed,
-- fallen-back): what `fleet status` and `fleet guard` count.
CREATE TABLE attempts (
    machine_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    version TEXT NOT NULL,
    outcome TEXT NOT NULL,
    grp TEXT,
    fleet_position DOUBLE PRECISION,
    time_ms BIGINT NOT NULL,
    PRIMARY KEY (machine_id, channel, version)
);
CREATE INDEX attempts_release ON attempts (channel, version, outcome);
