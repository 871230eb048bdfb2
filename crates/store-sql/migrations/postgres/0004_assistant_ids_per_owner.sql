-- Assistant ids are per owner too (issue 6): a client may choose an assistant's id, so two
-- users may both have an assistant `X`; a create by one must not reveal that the other's
-- exists. Assistants are keyed by (owner, assistant_id) and so are their versions. System
-- assistants (owner 'system') are seen by everyone; their ids stay refused to users.

ALTER TABLE assistant_versions ADD COLUMN owner TEXT COLLATE "C";
UPDATE assistant_versions v SET owner = a.owner FROM assistants a WHERE a.assistant_id = v.assistant_id;
DELETE FROM assistant_versions WHERE owner IS NULL;
ALTER TABLE assistant_versions ALTER COLUMN owner SET NOT NULL,
    DROP CONSTRAINT assistant_versions_assistant_id_fkey,
    DROP CONSTRAINT assistant_versions_pkey,
    ADD PRIMARY KEY (owner, assistant_id, version);
ALTER TABLE assistants DROP CONSTRAINT assistants_pkey, ADD PRIMARY KEY (owner, assistant_id);
ALTER TABLE assistant_versions ADD CONSTRAINT fk_assistant_versions_assistant
    FOREIGN KEY (owner, assistant_id) REFERENCES assistants (owner, assistant_id) ON DELETE CASCADE;
CREATE INDEX ix_assistants_id ON assistants (assistant_id);
