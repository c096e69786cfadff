-- A dead letter's id, what names it (re-drives, the API, the console), is the table's primary
-- key: migration 0040 dropped the key of source positions for the unique index of position and
-- value hash, and left the table with a unique id but no primary key. The re-drives' foreign
-- key names the id's unique constraint, so it is made again on the primary key.
ALTER TABLE dead_letter_redrives DROP CONSTRAINT dead_letter_redrives_dead_letter_id_fkey;
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_id_key,
    ADD CONSTRAINT dead_letters_pkey PRIMARY KEY (id);
ALTER TABLE dead_letter_redrives ADD CONSTRAINT dead_letter_redrives_dead_letter_id_fkey
    FOREIGN KEY (dead_letter_id) REFERENCES dead_letters (id);
