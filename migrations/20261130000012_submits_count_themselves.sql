-- A submit adds the jobs it inserts to its keys' counts itself, in the statement that checks
-- their caps (clipstash_db::batch, the only writer of jobs with a key), instead of through an
-- insert trigger: the trigger's plpgsql call and transition table took ~8% of a keyed
-- submit's CPU (docs/BENCHMARKS.md, "Keyed submits counted by their statement"). Updates,
-- deletes and truncations, made by many statements (claims, completions, cancels, retention,
-- an operator's SQL), stay counted by the trigger.
--
-- A job inserted with a key by other SQL is not counted; and such an insert skips the cap,
-- which only the submit statement checks. deploy/sql/recount-active-jobs.sql repairs counts.
--
-- Rolling upgrade: an API of the previous version still running after this migration
-- inserts without counting (this version's API refuses to start on the previous schema, where
-- it would count twice). Run the recount script once the last API of the previous version
-- has stopped (docs/CONFIGURATION.md).

-- The trigger function (migration 11) keeps its branch for inserts, now never reached: the
-- function stays one definition, in one migration.
DROP TRIGGER jobs_count_active_inserted ON jobs;
