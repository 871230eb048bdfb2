-- Assistant ids are per owner too (issue 6): a client may choose an assistant's id, so two
-- users may both have an assistant `X`; a create by one must not reveal that the other's
-- exists. Assistants are keyed by (owner, assistant_id) and so are their versions. System
-- assistants (owner 'system') are seen by everyone; their ids stay refused to users.

ALTER TABLE assistant_versions DROP FOREIGN KEY fk_assistant_versions_assistant;
ALTER TABLE assistant_versions ADD COLUMN owner VARCHAR(255) NULL FIRST;
UPDATE assistant_versions v JOIN assistants a ON a.assistant_id = v.assistant_id SET v.owner = a.owner;
DELETE FROM assistant_versions WHERE owner IS NULL;
ALTER TABLE assistant_versions MODIFY owner VARCHAR(255) NOT NULL,
    DROP PRIMARY KEY, ADD PRIMARY KEY (owner, assistant_id, version);
ALTER TABLE assistants DROP PRIMARY KEY, ADD PRIMARY KEY (owner, assistant_id),
    ADD KEY ix_assistants_id (assistant_id);
ALTER TABLE assistant_versions ADD CONSTRAINT fk_assistant_versions_assistant
    FOREIGN KEY (owner, assistant_id) REFERENCES assistants (owner, assistant_id) ON DELETE CASCADE;
