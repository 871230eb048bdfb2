//! Assistant service: the graphs' system assistants, resolution of run targets, and the
//! assistant API (create, get, update = new version, delete, search, count, versions, latest).
//!
//! Every `assistant_id` of the API accepts a UUID or a registered graph name (which stands for
//! that graph's system assistant). System assistants are readable by everyone and writable by
//! no user (403).

use antler_store::{
    Assistant, AssistantPatch, AssistantSearch, AssistantVersion, Owner, SYSTEM_OWNER, StoreError,
    VersionQuery, system_assistant_id,
};
use serde_json::{Map, Value};

use super::{IfExists, new_id};
use crate::{Runtime, RuntimeError};

/// An assistant create (`POST /assistants`).
#[derive(Debug, Clone, Default)]
pub struct NewAssistant {
    /// The client's id (a UUID); `None`: the service mints one.
    pub assistant_id: Option<String>,
    pub graph_id: String,
    pub config: Map<String, Value>,
    /// `None`: the config's `configurable`.
    pub context: Option<Map<String, Value>>,
    pub metadata: Map<String, Value>,
    /// `None`: `Untitled`.
    pub name: Option<String>,
    pub description: Option<String>,
    pub if_exists: IfExists,
}

/// The changes of an assistant update (`PATCH /assistants/{id}`); `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct AssistantChanges {
    pub graph_id: Option<String>,
    /// Replaces the config.
    pub config: Option<Map<String, Value>>,
    /// Replaces the context; when absent, a new config with `configurable` replaces it too.
    pub context: Option<Map<String, Value>>,
    /// Merged into the metadata.
    pub metadata: Option<Map<String, Value>>,
    pub name: Option<String>,
    pub description: Option<String>,
}

/// The context an assistant gets from its config: `configurable` (or `{}`).
fn context_from_config(config: &Map<String, Value>) -> Value {
    match config.get("configurable") {
        Some(Value::Object(c)) => Value::Object(c.clone()),
        _ => Value::Object(Map::new()),
    }
}

fn already_exists(assistant_id: &str) -> RuntimeError {
    RuntimeError::Conflict(format!("Assistant {assistant_id} already exists"))
}

/// Users may read the graphs' system assistants but not change them (they belong to the
/// server, and every user sees them): 403 with a hint instead of a misleading 404.
fn ensure_writable(assistant: &Assistant) -> Result<(), RuntimeError> {
    if assistant.owner == SYSTEM_OWNER {
        Err(RuntimeError::Forbidden(format!(
            "Assistant {} is the system assistant of graph '{}' and cannot be modified; create your own with POST /assistants",
            assistant.assistant_id, assistant.graph_id
        )))
    } else {
        Ok(())
    }
}

impl Runtime {
    /// Creates the system assistant of every registered graph (idempotent); a graph whose
    /// description changed since (a declared agent's `description`) gets a new version of it.
    pub async fn register_system_assistants(&self) -> Result<(), RuntimeError> {
        for graph_id in self.graphs.ids() {
            let id = system_assistant_id(graph_id);
            let description = self.graphs.description(graph_id).map(str::to_string);
            let record = match self.stores.assistants.get(Owner("system"), &id).await? {
                Some(a) if description.is_some() && a.description != description => {
                    let patch = AssistantPatch {
                        description: description.clone(),
                        ..Default::default()
                    };
                    self.stores
                        .assistants
                        .update(Owner("system"), &id, patch)
                        .await?
                }
                Some(a) => a,
                None => match self
                    .stores
                    .assistants
                    .create(Owner("system"), {
                        let mut a = Assistant::system(graph_id);
                        a.description = description.clone();
                        a
                    })
                    .await
                {
                    Ok(a) => a,
                    Err(StoreError::Conflict(_)) => self
                        .stores
                        .assistants
                        .get(Owner("system"), &id)
                        .await?
                        .unwrap_or_else(|| Assistant::system(graph_id)),
                    Err(e) => return Err(e.into()),
                },
            };
            self.system_assistants
                .write()
                .insert(graph_id.clone(), record);
        }
        Ok(())
    }

    /// Resolves an assistant id or graph name to the assistant record.
    pub async fn resolve_assistant(
        &self,
        owner: &str,
        assistant_id: &str,
    ) -> Result<Assistant, RuntimeError> {
        if self.graphs.contains(assistant_id) {
            if let Some(a) = self.system_assistants.read().get(assistant_id) {
                return Ok(a.clone());
            }
            let id = system_assistant_id(assistant_id);
            if let Some(a) = self.stores.assistants.get(Owner(owner), &id).await? {
                return Ok(a);
            }
            return Ok(Assistant::system(assistant_id));
        }
        let cached = self
            .system_assistants
            .read()
            .values()
            .find(|a| a.assistant_id == assistant_id)
            .cloned();
        if let Some(a) = cached {
            return Ok(a);
        }
        if let Some(a) = self
            .stores
            .assistants
            .get(Owner(owner), assistant_id)
            .await?
            && self.graphs.contains(&a.graph_id)
        {
            return Ok(a);
        }
        if uuid::Uuid::parse_str(assistant_id).is_ok() {
            return Err(RuntimeError::NotFound(
                "Thread or assistant not found.".into(),
            ));
        }
        Err(RuntimeError::Invalid(format!(
            "Invalid assistant: '{assistant_id}'. Must be either:\n- A valid assistant UUID, or\n- One of the registered graphs: {}",
            self.graphs.ids().join(", ")
        )))
    }

    /// 404 naming the registered graphs unless `graph_id` is one of them.
    fn require_graph(&self, graph_id: &str) -> Result<(), RuntimeError> {
        if self.graphs.contains(graph_id) {
            return Ok(());
        }
        let expected: Vec<String> = self
            .graphs
            .sorted_ids()
            .into_iter()
            .map(|g| format!("'{g}'"))
            .collect();
        Err(RuntimeError::NotFound(format!(
            "Graph '{graph_id}' not found. Expected one of: [{}]",
            expected.join(", ")
        )))
    }

    /// The id an API path or body names: a UUID (canonicalized) or a registered graph name
    /// (its system assistant's id); 422 otherwise.
    fn assistant_id_of(&self, raw: &str) -> Result<String, RuntimeError> {
        if let Ok(id) = uuid::Uuid::parse_str(raw) {
            return Ok(id.hyphenated().to_string());
        }
        if self.graphs.contains(raw) {
            return Ok(system_assistant_id(raw));
        }
        Err(RuntimeError::Invalid(
            "Invalid assistant ID: must be a UUID or the name of a registered graph".into(),
        ))
    }

    /// Creates an assistant of a registered graph; a taken id answers the existing assistant
    /// with `if_exists: do_nothing`, 409 otherwise.
    pub async fn create_assistant(
        &self,
        owner: &str,
        new: NewAssistant,
    ) -> Result<Assistant, RuntimeError> {
        self.require_graph(&new.graph_id)?;
        let chosen = new.assistant_id.is_some();
        let assistant_id = match new.assistant_id.as_deref() {
            Some(raw) => uuid::Uuid::parse_str(raw)
                .map(|u| u.hyphenated().to_string())
                .map_err(|_| {
                    RuntimeError::Invalid("Invalid assistant ID: must be a UUID".into())
                })?,
            None => new_id(),
        };
        if chosen
            && let Some(existing) = self
                .stores
                .assistants
                .get(Owner(owner), &assistant_id)
                .await?
        {
            return match new.if_exists {
                IfExists::DoNothing => Ok(existing),
                IfExists::Raise => Err(already_exists(&assistant_id)),
            };
        }
        let mut assistant = Assistant::new(
            assistant_id.clone(),
            new.graph_id,
            new.name.unwrap_or_else(|| "Untitled".to_owned()),
        );
        assistant.context = match new.context {
            Some(ctx) => Value::Object(ctx),
            None => context_from_config(&new.config),
        };
        assistant.config = Value::Object(new.config);
        assistant.metadata = new.metadata;
        assistant.description = new.description;
        match self.stores.assistants.create(Owner(owner), assistant).await {
            Ok(created) => Ok(created),
            Err(StoreError::Conflict(_)) if new.if_exists == IfExists::DoNothing => self
                .stores
                .assistants
                .get(Owner(owner), &assistant_id)
                .await?
                .ok_or_else(|| already_exists(&assistant_id)),
            Err(StoreError::Conflict(_)) => Err(already_exists(&assistant_id)),
            Err(other) => Err(other.into()),
        }
    }

    /// An assistant visible to `owner` (its own, or a system assistant): by UUID or graph
    /// name; 404 `Not Found` otherwise.
    pub async fn get_assistant(
        &self,
        owner: &str,
        assistant_id: &str,
    ) -> Result<Assistant, RuntimeError> {
        let id = self.assistant_id_of(assistant_id)?;
        self.stores
            .assistants
            .get(Owner(owner), &id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound("Not Found".into()))
    }

    /// `owner`'s assistant, which they may change (403 for a system assistant).
    async fn writable_assistant(
        &self,
        owner: &str,
        assistant_id: &str,
    ) -> Result<Assistant, RuntimeError> {
        let assistant = self.get_assistant(owner, assistant_id).await?;
        ensure_writable(&assistant)?;
        Ok(assistant)
    }

    /// Applies the changes as a new version of the assistant.
    pub async fn update_assistant(
        &self,
        owner: &str,
        assistant_id: &str,
        changes: AssistantChanges,
    ) -> Result<Assistant, RuntimeError> {
        let current = self.writable_assistant(owner, assistant_id).await?;
        if let Some(graph_id) = &changes.graph_id {
            self.require_graph(graph_id)?;
        }
        let context = match (changes.context, &changes.config) {
            (Some(ctx), _) => Some(Value::Object(ctx)),
            (None, Some(config)) if config.contains_key("configurable") => {
                Some(context_from_config(config))
            }
            _ => None,
        };
        let patch = AssistantPatch {
            graph_id: changes.graph_id,
            config: changes.config.map(Value::Object),
            context,
            metadata: changes.metadata,
            name: changes.name,
            description: changes.description,
        };
        Ok(self
            .stores
            .assistants
            .update(Owner(owner), &current.assistant_id, patch)
            .await?)
    }

    /// Deletes `owner`'s assistant with its versions.
    pub async fn delete_assistant(
        &self,
        owner: &str,
        assistant_id: &str,
    ) -> Result<(), RuntimeError> {
        let assistant = self.writable_assistant(owner, assistant_id).await?;
        Ok(self
            .stores
            .assistants
            .delete(Owner(owner), &assistant.assistant_id)
            .await?)
    }

    /// One page of matching assistants and the number of all matches.
    pub async fn search_assistants(
        &self,
        owner: &str,
        query: &AssistantSearch,
    ) -> Result<(Vec<Assistant>, u64), RuntimeError> {
        Ok(self.stores.assistants.search(Owner(owner), query).await?)
    }

    /// The number of matching assistants (paging ignored).
    pub async fn count_assistants(
        &self,
        owner: &str,
        query: &AssistantSearch,
    ) -> Result<u64, RuntimeError> {
        Ok(self.stores.assistants.count(Owner(owner), query).await?)
    }

    /// The versions of an assistant, newest first.
    pub async fn assistant_versions(
        &self,
        owner: &str,
        assistant_id: &str,
        query: &VersionQuery,
    ) -> Result<Vec<AssistantVersion>, RuntimeError> {
        let assistant = self.get_assistant(owner, assistant_id).await?;
        Ok(self
            .stores
            .assistants
            .versions(Owner(owner), &assistant.assistant_id, query)
            .await?)
    }

    /// Makes `version` the assistant's current version.
    pub async fn set_latest_assistant_version(
        &self,
        owner: &str,
        assistant_id: &str,
        version: i64,
    ) -> Result<Assistant, RuntimeError> {
        let assistant = self.writable_assistant(owner, assistant_id).await?;
        Ok(self
            .stores
            .assistants
            .set_latest(Owner(owner), &assistant.assistant_id, version)
            .await?)
    }
}
