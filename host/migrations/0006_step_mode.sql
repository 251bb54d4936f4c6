-- Step mode: the run pauses at every step boundary until an operator
-- continues it (`stepgate run --step`). A resumed run must pause the same way.
ALTER TABLE runs ADD COLUMN step_mode INTEGER NOT NULL DEFAULT 0;
