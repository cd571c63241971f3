//! The registry's ARM identity: subscription, resource group and registry name, and the one
//! place its resource ids are spelled. The registry's `id`, its children's (webhooks, tokens,
//! scope maps), the Event Grid `topic` and the CloudEvents `source` all come from here, so a
//! configured identity shows the same everywhere.

use std::fmt;

/// Subscription of a registry configured with none: the null GUID, which no Azure
/// subscription has, so a Wharf id cannot be mistaken for a real Azure resource.
pub const DEFAULT_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
pub const DEFAULT_RESOURCE_GROUP: &str = "wharf";
pub const DEFAULT_REGISTRY: &str = "wharf";

/// ARM's resource provider and type of a registry.
pub const PROVIDER: &str = "Microsoft.ContainerRegistry";
pub const REGISTRY_TYPE: &str = "Microsoft.ContainerRegistry/registries";

/// Where a registry sits in ARM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmIdentity {
    pub subscription: String,
    pub resource_group: String,
    pub registry: String,
}

impl Default for ArmIdentity {
    fn default() -> Self {
        ArmIdentity {
            subscription: DEFAULT_SUBSCRIPTION.to_owned(),
            resource_group: DEFAULT_RESOURCE_GROUP.to_owned(),
            registry: DEFAULT_REGISTRY.to_owned(),
        }
    }
}

/// Which part of an [`ArmIdentity`] breaks ARM's rules, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArmIdentityError {
    #[error("must be a GUID such as 00000000-0000-0000-0000-000000000000")]
    Subscription,
    #[error("must be 1 to 90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'")]
    ResourceGroup,
    #[error("must be 5 to 50 letters or digits")]
    Registry,
}

/// Whether `s` is a GUID in its 8-4-4-4-12 hexadecimal form.
pub fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// ARM's resource-group name rule.
pub fn valid_resource_group(s: &str) -> bool {
    (1..=90).contains(&s.len())
        && !s.ends_with('.')
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
}

/// ACR's registry name rule.
pub fn valid_registry_name(s: &str) -> bool {
    (5..=50).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl ArmIdentity {
    /// Checks each part against ARM's rules; the error names the first part that breaks them.
    pub fn validate(&self) -> Result<(), ArmIdentityError> {
        if !is_guid(&self.subscription) {
            return Err(ArmIdentityError::Subscription);
        }
        if !valid_resource_group(&self.resource_group) {
            return Err(ArmIdentityError::ResourceGroup);
        }
        if !valid_registry_name(&self.registry) {
            return Err(ArmIdentityError::Registry);
        }
        Ok(())
    }

    /// `/subscriptions/{sub}`.
    pub fn subscription_id(&self) -> String {
        format!("/subscriptions/{}", self.subscription)
    }

    /// `/subscriptions/{sub}/resourceGroups/{rg}`.
    pub fn resource_group_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.subscription, self.resource_group
        )
    }

    /// The registry's resource id.
    pub fn registry_id(&self) -> String {
        format!(
            "{}/providers/{PROVIDER}/registries/{}",
            self.resource_group_id(),
            self.registry
        )
    }

    /// The id of a child resource: `kind` is the collection (`webhooks`, `tokens`,
    /// `scopeMaps`).
    pub fn child_id(&self, kind: &str, name: &str) -> String {
        format!("{}/{kind}/{name}", self.registry_id())
    }
}

impl fmt::Display for ArmIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.registry_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_identity_is_valid_and_keeps_the_ids_wharf_always_had() {
        let a = ArmIdentity::default();
        assert_eq!(a.validate(), Ok(()));
        assert_eq!(
            a.registry_id(),
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/wharf/providers/Microsoft.ContainerRegistry/registries/wharf"
        );
        assert_eq!(
            a.child_id("webhooks", "hook1"),
            format!("{}/webhooks/hook1", a.registry_id())
        );
    }

    #[test]
    fn each_part_is_checked() {
        let ok = ArmIdentity::default();
        let bad_sub = ArmIdentity {
            subscription: "not-a-guid".into(),
            ..ok.clone()
        };
        assert_eq!(bad_sub.validate(), Err(ArmIdentityError::Subscription));
        for rg in ["", "ends.", "has space", &"r".repeat(91)] {
            let a = ArmIdentity {
                resource_group: rg.into(),
                ..ok.clone()
            };
            assert_eq!(a.validate(), Err(ArmIdentityError::ResourceGroup), "{rg:?}");
        }
        for rg in ["rg-prod_1.(eu)", "R"] {
            assert!(valid_resource_group(rg), "{rg}");
        }
        for r in ["abcd", "has-dash", &"r".repeat(51)] {
            let a = ArmIdentity {
                registry: r.into(),
                ..ok.clone()
            };
            assert_eq!(a.validate(), Err(ArmIdentityError::Registry), "{r:?}");
        }
        assert!(is_guid("6F1A2B3C-0000-4000-8000-00000000ABCD"));
        assert!(!is_guid("6F1A2B3C00004000800000000000ABCD"));
    }
}
