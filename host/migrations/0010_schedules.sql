-- The last tick each schedule fired (ms since the epoch), so ticks missed
-- while no server ran are known at the next start.
CREATE TABLE schedules (
    name       TEXT PRIMARY KEY NOT NULL,
    last_tick  BIGINT NOT NULL
);
