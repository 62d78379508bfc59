//! Arrow schemas of every lake table, and the one mapping between the API's property
//! names (`computerDnsName`) and the lake's column names (`computer_dns_name`).
//!
//! The column lists are a contract (`design.md`, "Tables and columns"): data lakes and
//! users' scripts depend on them. Timestamps are microseconds in UTC (the API's seventh
//! fractional digit, 100 ns, is truncated by `decode` and not kept), enumerations stay
//! strings, and properties the schema does not know travel in `extra` as JSON text.
//! [`api_shape`] turns rows back into the API's shape (nested names, JSON records).

pub mod api_shape;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// The timezone every timestamp column carries.
pub const UTC: &str = "UTC";

/// Name of the column every `_history` table adds.
pub const SNAPSHOT_COLUMN: &str = "snapshot";

/// The five tables a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Machines,
    IpAddresses,
    SecurityStates,
    UserMachines,
    DomainMachines,
    /// Changes of `machines` against the previous snapshot (see `crate::changes`).
    MachineChanges,
    /// Addresses added to or removed from machines against the previous snapshot.
    IpAddressChanges,
}

impl Table {
    /// Every table, in the order listings show them.
    pub const ALL: [Table; 5] = [
        Table::Machines,
        Table::IpAddresses,
        Table::SecurityStates,
        Table::UserMachines,
        Table::DomainMachines,
    ];

    /// The tables computed at commit from a snapshot and the one before it.
    pub const CHANGES: [Table; 2] = [Table::MachineChanges, Table::IpAddressChanges];

    /// Every table a lake may hold a folder of.
    pub const STORED: [Table; 7] = [
        Table::Machines,
        Table::IpAddresses,
        Table::SecurityStates,
        Table::UserMachines,
        Table::DomainMachines,
        Table::MachineChanges,
        Table::IpAddressChanges,
    ];

    /// The SQL name of the latest-snapshot table, also its folder in the lake. The
    /// change tables have no latest table: their name is the table of every snapshot.
    pub fn name(self) -> &'static str {
        match self {
            Table::Machines => "machines",
            Table::IpAddresses => "ip_addresses",
            Table::SecurityStates => "security_states",
            Table::UserMachines => "user_machines",
            Table::DomainMachines => "domain_machines",
            Table::MachineChanges => "machine_changes",
            Table::IpAddressChanges => "ip_address_changes",
        }
    }

    /// The SQL name of the table across every snapshot: `<name>_history`, and the
    /// name itself for a change table.
    pub fn history_name(self) -> String {
        if self.is_change() {
            self.name().to_string()
        } else {
            format!("{}_history", self.name())
        }
    }

    /// Whether this is one of [`Table::CHANGES`].
    pub fn is_change(self) -> bool {
        Table::CHANGES.contains(&self)
    }

    /// The OData entity set name the API uses in `@odata.context`.
    pub fn entity_set(self) -> &'static str {
        match self {
            Table::Machines => "Machines",
            Table::IpAddresses => "IpAddresses",
            Table::SecurityStates => "MachineSecurityStates",
            Table::UserMachines => "UserMachines",
            Table::DomainMachines => "DomainMachines",
            Table::MachineChanges => "MachineChanges",
            Table::IpAddressChanges => "IpAddressChanges",
        }
    }

    /// The Arrow schema of the table's Parquet files (no `snapshot` column).
    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Machines => Arc::clone(&MACHINES),
            Table::IpAddresses => Arc::clone(&IP_ADDRESSES),
            Table::SecurityStates => Arc::clone(&SECURITY_STATES),
            Table::UserMachines => Arc::clone(&USER_MACHINES),
            Table::DomainMachines => Arc::clone(&DOMAIN_MACHINES),
            Table::MachineChanges => Arc::clone(&MACHINE_CHANGES),
            Table::IpAddressChanges => Arc::clone(&IP_ADDRESS_CHANGES),
        }
    }

    /// The column each row group of the table's files is sorted by, so that the page
    /// index narrows a search on it to a page or two per row group: the name analysts
    /// look machines up by, the address a prefix search scans. Other tables keep the
    /// order they were appended in.
    pub fn sort_column(self) -> Option<&'static str> {
        self.sort_columns().map(|columns| columns[0])
    }

    /// The column holding the machine's id, which every table has: `id` where the row
    /// is the machine (or its security state, or its change), `machine_id` elsewhere.
    pub fn machine_id_column(self) -> &'static str {
        match self {
            Table::Machines | Table::SecurityStates | Table::MachineChanges => "id",
            Table::IpAddresses
            | Table::UserMachines
            | Table::DomainMachines
            | Table::IpAddressChanges => "machine_id",
        }
    }

    /// The Parquet column paths of the table whose values are distinct per machine, or
    /// nearly: its machine id, and the machine's AAD device id, timestamps and addresses.
    /// A dictionary of them saves no space, and costs every reader of one of their pages
    /// the whole dictionary page (`SnapshotWriter` writes them without one).
    pub fn distinct_columns(self) -> Vec<Vec<&'static str>> {
        let mut columns = vec![vec![self.machine_id_column()]];
        match self {
            Table::Machines => columns.extend([
                vec!["aad_device_id"],
                vec!["first_seen"],
                vec!["last_seen"],
                vec!["last_ip_address"],
                vec!["ip_addresses", "list", "item", "ip_address"],
                vec!["ip_addresses", "list", "item", "mac_address"],
            ]),
            Table::IpAddresses => columns.push(vec!["mac_address"]),
            _ => {}
        }
        columns
    }

    /// [`Table::sort_column`], then the machine id where it ties: names and addresses
    /// that several machines share come out in one order in every snapshot, so the
    /// same input makes the same files and each snapshot lists its machines in the
    /// order of the one before (which `count(DISTINCT id)` over the history uses).
    pub fn sort_columns(self) -> Option<&'static [&'static str]> {
        match self {
            Table::Machines => Some(&["computer_dns_name", "id"]),
            Table::IpAddresses => Some(&["ip_address", "machine_id"]),
            _ => None,
        }
    }

    /// The schema of the `_history` table: the file schema plus `snapshot`.
    pub fn history_schema(self) -> SchemaRef {
        let mut fields: Vec<Arc<Field>> = self.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(snapshot_field()));
        Arc::new(Schema::new(fields))
    }

    /// The columns mapped to API properties, for tables that come from one API entity.
    pub fn properties(self) -> &'static [Property] {
        match self {
            Table::Machines => MACHINE_PROPERTIES,
            Table::SecurityStates => SECURITY_STATE_PROPERTIES,
            Table::IpAddresses => IP_ADDRESS_PROPERTIES,
            Table::MachineChanges => MACHINE_CHANGE_PROPERTIES,
            Table::IpAddressChanges => IP_ADDRESS_CHANGE_PROPERTIES,
            Table::UserMachines | Table::DomainMachines => &[],
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A table name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown table '{0}' (expected one of machines, ip_addresses, security_states, user_machines, domain_machines)"
)]
pub struct UnknownTable(pub String);

impl FromStr for Table {
    type Err = UnknownTable;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Table::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s) || t.entity_set().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownTable(s.to_string()))
    }
}

/// One API property stored in its own column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Property {
    /// The API's JSON key, e.g. `computerDnsName`.
    pub api: &'static str,
    /// The lake's column, e.g. `computer_dns_name`.
    pub column: &'static str,
    /// What the column holds.
    pub kind: Kind,
}

/// The shape of a property's column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Bool,
    Int64,
    Timestamp,
    StringList,
    IpAddressList,
    VmMetadata,
}

const fn p(api: &'static str, column: &'static str, kind: Kind) -> Property {
    Property { api, column, kind }
}

/// Machine properties in the live service's key order (contract 2.7).
pub const MACHINE_PROPERTIES: &[Property] = &[
    p("id", "id", Kind::String),
    p(
        "mergedIntoMachineId",
        "merged_into_machine_id",
        Kind::String,
    ),
    p(
        "isPotentialDuplication",
        "is_potential_duplication",
        Kind::Bool,
    ),
    p("isExcluded", "is_excluded", Kind::Bool),
    p("exclusionReason", "exclusion_reason", Kind::String),
    p("computerDnsName", "computer_dns_name", Kind::String),
    p("firstSeen", "first_seen", Kind::Timestamp),
    p("lastSeen", "last_seen", Kind::Timestamp),
    p("osPlatform", "os_platform", Kind::String),
    p("osVersion", "os_version", Kind::String),
    p("osProcessor", "os_processor", Kind::String),
    p("version", "version", Kind::String),
    p("lastIpAddress", "last_ip_address", Kind::String),
    p(
        "lastExternalIpAddress",
        "last_external_ip_address",
        Kind::String,
    ),
    p("agentVersion", "agent_version", Kind::String),
    p("osBuild", "os_build", Kind::Int64),
    p("healthStatus", "health_status", Kind::String),
    p("deviceValue", "device_value", Kind::String),
    p("rbacGroupId", "rbac_group_id", Kind::Int64),
    p("rbacGroupName", "rbac_group_name", Kind::String),
    p("riskScore", "risk_score", Kind::String),
    p("exposureLevel", "exposure_level", Kind::String),
    p("isAadJoined", "is_aad_joined", Kind::Bool),
    p("aadDeviceId", "aad_device_id", Kind::String),
    p("machineTags", "machine_tags", Kind::StringList),
    p("defenderAvStatus", "defender_av_status", Kind::String),
    p("onboardingStatus", "onboarding_status", Kind::String),
    p("osArchitecture", "os_architecture", Kind::String),
    p("managedBy", "managed_by", Kind::String),
    p("managedByStatus", "managed_by_status", Kind::String),
    p("ipAddresses", "ip_addresses", Kind::IpAddressList),
    p("vmMetadata", "vm_metadata", Kind::VmMetadata),
];

/// Keys of one `ipAddresses` entry, also the columns of `ip_addresses` after `machine_id`.
pub const IP_ADDRESS_PROPERTIES: &[Property] = &[
    p("ipAddress", "ip_address", Kind::String),
    p("macAddress", "mac_address", Kind::String),
    p("type", "type", Kind::String),
    p("operationalStatus", "operational_status", Kind::String),
];

/// Keys of `vmMetadata` (shape inferred from Graph, contract 2.4).
pub const VM_METADATA_PROPERTIES: &[Property] = &[
    p("vmId", "vm_id", Kind::String),
    p("cloudProvider", "cloud_provider", Kind::String),
    p("resourceId", "resource_id", Kind::String),
    p("subscriptionId", "subscription_id", Kind::String),
];

/// MachineSecurityState properties (contract 3).
pub const SECURITY_STATE_PROPERTIES: &[Property] = &[
    p("id", "id", Kind::String),
    p("build", "build", Kind::Int64),
    p("revision", "revision", Kind::Int64),
    p("architecture", "architecture", Kind::String),
    p("osVersion", "os_version", Kind::String),
    p(
        "propertiesRequireAttention",
        "properties_require_attention",
        Kind::StringList,
    ),
];

/// The column name for an API property name, matched case-insensitively.
pub fn column_for_api_name(table: Table, api: &str) -> Option<&'static str> {
    table
        .properties()
        .iter()
        .find(|p| p.api.eq_ignore_ascii_case(api))
        .map(|p| p.column)
}

/// The API property name for a column, where the API has one.
pub fn api_name_for_column(table: Table, column: &str) -> Option<&'static str> {
    table
        .properties()
        .iter()
        .find(|p| p.column == column)
        .map(|p| p.api)
}

/// The timestamp type of every time column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

/// The `snapshot` column of `_history` tables.
pub fn snapshot_field() -> Field {
    Field::new(SNAPSHOT_COLUMN, timestamp_type(), false)
}

/// A list of nullable strings, as `machine_tags` holds.
pub fn string_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

/// The struct of one `ip_addresses` list entry on `machines`.
pub fn ip_address_fields() -> Fields {
    IP_ADDRESS_PROPERTIES
        .iter()
        .map(|p| Field::new(p.column, DataType::Utf8, true))
        .collect()
}

/// The struct of `vm_metadata`.
pub fn vm_metadata_fields() -> Fields {
    VM_METADATA_PROPERTIES
        .iter()
        .map(|p| Field::new(p.column, DataType::Utf8, true))
        .collect()
}

fn data_type(kind: Kind) -> DataType {
    match kind {
        Kind::String => DataType::Utf8,
        Kind::Bool => DataType::Boolean,
        Kind::Int64 => DataType::Int64,
        Kind::Timestamp => timestamp_type(),
        Kind::StringList => string_list_type(),
        Kind::IpAddressList => DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(ip_address_fields()),
            true,
        ))),
        Kind::VmMetadata => DataType::Struct(vm_metadata_fields()),
    }
}

fn entity_schema(props: &[Property]) -> Schema {
    let mut fields: Vec<Field> = props
        .iter()
        .map(|p| Field::new(p.column, data_type(p.kind), p.column != "id"))
        .collect();
    fields.push(Field::new("extra", DataType::Utf8, true));
    Schema::new(fields)
}

static MACHINES: LazyLock<SchemaRef> =
    LazyLock::new(|| Arc::new(entity_schema(MACHINE_PROPERTIES)));

static SECURITY_STATES: LazyLock<SchemaRef> =
    LazyLock::new(|| Arc::new(entity_schema(SECURITY_STATE_PROPERTIES)));

static IP_ADDRESSES: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![Field::new("machine_id", DataType::Utf8, false)];
    fields.extend(
        IP_ADDRESS_PROPERTIES
            .iter()
            .map(|p| Field::new(p.column, DataType::Utf8, true)),
    );
    Arc::new(Schema::new(fields))
});

static USER_MACHINES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("machine_id", DataType::Utf8, false),
    ]))
});

static DOMAIN_MACHINES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("domain", DataType::Utf8, false),
        Field::new("machine_id", DataType::Utf8, false),
    ]))
});

/// `machine_changes` columns; the API has no such entity, so the names follow its
/// style.
pub const MACHINE_CHANGE_PROPERTIES: &[Property] = &[
    p("previousSnapshot", "previous_snapshot", Kind::Timestamp),
    p("id", "id", Kind::String),
    p("computerDnsName", "computer_dns_name", Kind::String),
    p("change", "change", Kind::String),
    p("field", "field", Kind::String),
    p("oldValue", "old_value", Kind::String),
    p("newValue", "new_value", Kind::String),
];

/// `ip_address_changes` columns.
pub const IP_ADDRESS_CHANGE_PROPERTIES: &[Property] = &[
    p("previousSnapshot", "previous_snapshot", Kind::Timestamp),
    p("machineId", "machine_id", Kind::String),
    p("ipAddress", "ip_address", Kind::String),
    p("change", "change", Kind::String),
    p("macAddress", "mac_address", Kind::String),
    p("type", "type", Kind::String),
];

static MACHINE_CHANGES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("previous_snapshot", timestamp_type(), false),
        Field::new("id", DataType::Utf8, false),
        Field::new("computer_dns_name", DataType::Utf8, true),
        Field::new("change", DataType::Utf8, false),
        Field::new("field", DataType::Utf8, true),
        Field::new("old_value", DataType::Utf8, true),
        Field::new("new_value", DataType::Utf8, true),
    ]))
});

static IP_ADDRESS_CHANGES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("previous_snapshot", timestamp_type(), false),
        Field::new("machine_id", DataType::Utf8, false),
        Field::new("ip_address", DataType::Utf8, true),
        Field::new("change", DataType::Utf8, false),
        Field::new("mac_address", DataType::Utf8, true),
        Field::new("type", DataType::Utf8, true),
    ]))
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_columns_follow_the_design() {
        let names: Vec<String> = Table::Machines
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names.first().map(String::as_str), Some("id"));
        assert_eq!(names.last().map(String::as_str), Some("extra"));
        assert_eq!(names.len(), MACHINE_PROPERTIES.len() + 1);
        let schema = Table::Machines.schema();
        assert!(
            !schema
                .field_with_name("id")
                .map(|f| f.is_nullable())
                .unwrap_or(true)
        );
        assert_eq!(
            schema
                .field_with_name("last_seen")
                .map(|f| f.data_type().clone())
                .ok(),
            Some(timestamp_type())
        );
        assert_eq!(
            schema
                .field_with_name("rbac_group_id")
                .map(|f| f.data_type().clone())
                .ok(),
            Some(DataType::Int64)
        );
    }

    #[test]
    fn api_names_map_both_ways_case_insensitively() {
        assert_eq!(
            column_for_api_name(Table::Machines, "ComputerDnsName"),
            Some("computer_dns_name")
        );
        assert_eq!(
            api_name_for_column(Table::Machines, "rbac_group_id"),
            Some("rbacGroupId")
        );
        assert_eq!(column_for_api_name(Table::Machines, "nope"), None);
    }

    #[test]
    fn history_adds_a_typed_snapshot_column() {
        let s = Table::IpAddresses.history_schema();
        let f = s.field_with_name(SNAPSHOT_COLUMN).ok().cloned();
        assert_eq!(f.map(|f| f.data_type().clone()), Some(timestamp_type()));
    }

    #[test]
    fn table_names_parse() {
        assert_eq!("Machines".parse::<Table>(), Ok(Table::Machines));
        assert!("nope".parse::<Table>().is_err());
    }
}
