DROP FUNCTION IF EXISTS clip_rows(uuid[]);
