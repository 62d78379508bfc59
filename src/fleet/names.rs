//! The pools the fleet draws from: operating systems with consistent version and build
//! mixes, names, tags, device groups and domains.

/// What kind of device an OS makes, for names and behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Client,
    Server,
    Linux,
    Mac,
    Mobile,
}

/// One `osPlatform` with its `version`/`osBuild` mix (weights in the first field).
#[derive(Debug)]
pub struct Os {
    pub platform: &'static str,
    pub class: Class,
    pub versions: &'static [(u64, &'static str, Option<i64>)],
}

/// `osPlatform` tokens weighted by share of a typical enterprise fleet.
pub const OSES: &[(u64, Os)] = &[
    (
        64,
        Os {
            platform: "Windows10",
            class: Class::Client,
            versions: &[
                (30, "22H2", Some(19045)),
                (10, "21H2", Some(19044)),
                (3, "21H1", Some(19043)),
                (2, "1909", Some(18363)),
            ],
        },
    ),
    (
        76,
        Os {
            platform: "Windows11",
            class: Class::Client,
            versions: &[
                (25, "23H2", Some(22631)),
                (20, "24H2", Some(26100)),
                (15, "22H2", Some(22621)),
                (3, "21H2", Some(22000)),
            ],
        },
    ),
    (
        10,
        Os {
            platform: "WindowsServer2022",
            class: Class::Server,
            versions: &[(1, "21H2", Some(20348))],
        },
    ),
    (
        12,
        Os {
            platform: "WindowsServer2019",
            class: Class::Server,
            versions: &[(1, "1809", Some(17763))],
        },
    ),
    (
        6,
        Os {
            platform: "WindowsServer2016",
            class: Class::Server,
            versions: &[(1, "1607", Some(14393))],
        },
    ),
    (
        2,
        Os {
            platform: "WindowsServer2012R2",
            class: Class::Server,
            versions: &[(1, "6.3", Some(9600))],
        },
    ),
    (
        16,
        Os {
            platform: "Linux",
            class: Class::Linux,
            versions: &[(5, "22.04", None), (3, "20.04", None), (2, "9.4", None)],
        },
    ),
    (
        12,
        Os {
            platform: "macOS",
            class: Class::Mac,
            versions: &[(4, "14.6", None), (3, "15.1", None), (2, "13.7", None)],
        },
    ),
    (
        1,
        Os {
            platform: "iOS",
            class: Class::Mobile,
            versions: &[(1, "17.5", None)],
        },
    ),
    (
        1,
        Os {
            platform: "Android",
            class: Class::Mobile,
            versions: &[(1, "14", None)],
        },
    ),
];

/// Newer builds an in-place upgrade moves a Windows client to.
pub fn upgrade(platform: &str, build: i64) -> Option<(&'static str, i64)> {
    match (platform, build) {
        ("Windows10", b) if b < 19045 => Some(("22H2", 19045)),
        ("Windows11", b) if b < 22631 => Some(("23H2", 22631)),
        ("Windows11", 22631) => Some(("24H2", 26100)),
        _ => None,
    }
}

/// Device groups: (rbacGroupId, rbacGroupName, weight). Id 0 with no name is the
/// unassigned group; 140 and 5 are the documentation's.
pub const GROUPS: &[(i64, Option<&str>, u64)] = &[
    (0, None, 12),
    (140, Some("The-A-Team"), 6),
    (5, Some("Developers"), 14),
    (21, Some("Finance"), 8),
    (22, Some("HR"), 5),
    (31, Some("Servers-Tier0"), 3),
    (32, Some("Servers-Tier1"), 7),
    (40, Some("Kiosks"), 2),
    (51, Some("Sales-EMEA"), 9),
    (52, Some("Sales-AMER"), 9),
    (60, Some("Engineering"), 15),
    (70, Some("Executives"), 1),
];

pub const TAGS: &[&str] = &[
    "ExampleTag",
    "Tag1",
    "Tag2",
    "test tag 1",
    "VIP",
    "Pilot-Ring",
    "BYOD",
    "Contractor",
    "PCI",
    "Remote",
    "Decommission",
    "Lab",
];

pub const FIRST_NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yara", "zoe",
    "amir", "bea", "chen", "dara", "elif", "farid", "gita", "hana", "igor", "jon", "kemal", "lena",
    "mika", "nora", "omar", "priya", "quinn", "rosa", "sanjay", "tomas", "uma", "vera", "wei",
    "ximena", "yusuf", "zara", "anton", "bianca", "cyrus",
];

pub const LAST_NAMES: &[&str] = &[
    "smith", "jones", "garcia", "miller", "davis", "lopez", "wilson", "anderson", "thomas",
    "taylor", "moore", "martin", "lee", "perez", "thompson", "white", "harris", "clark", "lewis",
    "walker", "hall", "young", "allen", "king", "wright", "scott", "green", "baker", "adams",
    "nelson", "hill", "rivera", "campbell", "mitchell", "roberts", "carter", "phillips", "evans",
    "turner", "torres", "parker", "collins", "edwards", "stewart", "morris", "murphy", "cook",
    "rogers", "morgan", "peterson",
];

/// The user name of user `k` of the pool: `first.last`, with a number past the
/// combinations.
pub fn user_name(k: u64) -> String {
    let f = FIRST_NAMES.len() as u64;
    let l = LAST_NAMES.len() as u64;
    let first = FIRST_NAMES[(k % f) as usize];
    let last = LAST_NAMES[((k / f) % l) as usize];
    match k / (f * l) {
        0 => format!("{first}.{last}"),
        n => format!("{first}.{last}{n}"),
    }
}

const KNOWN_DOMAINS: &[&str] = &[
    "api.securitycenter.microsoft.com",
    "login.microsoftonline.com",
    "windowsupdate.com",
    "outlook.office365.com",
    "teams.microsoft.com",
    "graph.microsoft.com",
    "github.com",
    "www.google.com",
    "slack.com",
    "zoom.us",
    "contoso.com",
    "sharepoint.com",
    "onedrive.live.com",
    "azure.com",
    "aws.amazon.com",
    "cdn.jsdelivr.net",
    "pypi.org",
    "crates.io",
    "registry.npmjs.org",
    "docker.io",
    "ubuntu.com",
    "apple.com",
    "icloud.com",
    "dropbox.com",
    "salesforce.com",
    "workday.com",
    "servicenow.com",
    "atlassian.net",
    "okta.com",
    "wikipedia.org",
    "linkedin.com",
    "stackoverflow.com",
    "fabrikam.com",
    "adatum.com",
    "tailspintoys.com",
    "wingtiptoys.com",
    "northwindtraders.com",
    "litwareinc.com",
    "woodgrovebank.com",
    "proseware.com",
];

/// The number of domains in the pool.
pub const DOMAIN_COUNT: u64 = 200;

/// Domain `k` of the pool: well-known names first, then partner and CDN hosts.
pub fn domain_name(k: u64) -> String {
    match KNOWN_DOMAINS.get(k as usize) {
        Some(d) => (*d).to_string(),
        None => {
            let n = k - KNOWN_DOMAINS.len() as u64;
            match n % 4 {
                0 => format!("cdn{}.edgecache.net", n / 4),
                1 => format!("portal.partner{}.com", n / 4),
                2 => format!("telemetry{}.vendorcloud.io", n / 4),
                _ => format!("files{}.contoso-partners.com", n / 4),
            }
        }
    }
}

pub const SERVER_ROLES: &[&str] = &["app", "sql", "web", "file", "dc", "print", "build", "ca"];
pub const LINUX_ROLES: &[&str] = &["web", "db", "k8s-node", "cache", "bastion", "ci"];

/// Vendor prefixes for MAC addresses (Dell, Intel, VMware, Hyper-V, Lenovo, Apple).
pub const MAC_PREFIXES: &[&str] = &["8CEC4B", "3C5282", "000C29", "00155D", "F4939F", "A45E60"];

/// Azure subscriptions of the tenant's cloud servers.
pub const SUBSCRIPTIONS: &[&str] = &[
    "8700d3a3-3bb7-4fbe-a090-488a1ad04161",
    "2b6f1a9e-55c4-4d0e-9a31-7c1e0f6b2d44",
    "c3d9e8f1-0a2b-4c5d-8e7f-9a0b1c2d3e4f",
];
