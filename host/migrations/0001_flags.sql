-- Flags of the built-in flag store.
CREATE TABLE flags (
    name       TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
