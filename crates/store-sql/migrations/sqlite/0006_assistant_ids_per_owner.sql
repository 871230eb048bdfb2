-- Assistant ids are per owner too (issue 6): a client may choose an assistant's id, so two
-- users may both have an assistant `X`; a create by one must not reveal that the other's
-- exists. Assistants are keyed by (owner, assistant_id) and so are their versions. System
-- assistants (owner 'system') are seen by everyone; their ids stay refused to users.
--
-- Order matters with foreign keys on: the new tables are filled first, then the old versions
-- table is dropped before the old assistants table (dropping a parent would cascade into it).

CREATE TABLE assistants_new (
    assistant_id TEXT NOT NULL,
    owner        TEXT NOT NULL,
    graph_id     TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    config       TEXT NOT NULL,
    context      TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    version      INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (owner, assistant_id)
);
INSERT INTO assistants_new (assistant_id, owner, graph_id, name, description, config, context, metadata,
                            version, created_at, updated_at)
SELECT assistant_id, owner, graph_id, name, description, config, context, metadata,
       version, created_at, updated_at
  FROM assistants;

CREATE TABLE assistant_versions_new (
    owner        TEXT NOT NULL,
    assistant_id TEXT NOT NULL,
    version      INTEGER NOT NULL,
    graph_id     TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    config       TEXT NOT NULL,
    context      TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (owner, assistant_id, version),
    FOREIGN KEY (owner, assistant_id) REFERENCES assistants_new (owner, assistant_id) ON DELETE CASCADE
);
INSERT INTO assistant_versions_new (owner, assistant_id, version, graph_id, name, description, config,
                                    context, metadata, created_at)
SELECT a.owner, v.assistant_id, v.version, v.graph_id, v.name, v.description, v.config,
       v.context, v.metadata, v.created_at
  FROM assistant_versions v JOIN assistants a ON a.assistant_id = v.assistant_id;

DROP TABLE assistant_versions;
DROP TABLE assistants;
-- renaming rewrites the versions' foreign key to the new name
ALTER TABLE assistants_new RENAME TO assistants;
ALTER TABLE assistant_versions_new RENAME TO assistant_versions;
CREATE INDEX ix_assistants_owner_created ON assistants (owner, created_at);
CREATE INDEX ix_assistants_graph ON assistants (graph_id, created_at);
CREATE INDEX ix_assistants_id ON assistants (assistant_id);
