-- The same question asked of the history with lag(), one per property.
WITH h AS (
  SELECT snapshot, lag(snapshot) OVER w IS NOT NULL AS had,
         lag(merged_into_machine_id) OVER w IS DISTINCT FROM merged_into_machine_id AS c_merged_into_machine_id,
         lag(is_potential_duplication) OVER w IS DISTINCT FROM is_potential_duplication AS c_is_potential_duplication,
         lag(is_excluded) OVER w IS DISTINCT FROM is_excluded AS c_is_excluded,
         lag(exclusion_reason) OVER w IS DISTINCT FROM exclusion_reason AS c_exclusion_reason,
         lag(computer_dns_name) OVER w IS DISTINCT FROM computer_dns_name AS c_computer_dns_name,
         lag(first_seen) OVER w IS DISTINCT FROM first_seen AS c_first_seen,
         lag(os_platform) OVER w IS DISTINCT FROM os_platform AS c_os_platform,
         lag(os_version) OVER w IS DISTINCT FROM os_version AS c_os_version,
         lag(os_processor) OVER w IS DISTINCT FROM os_processor AS c_os_processor,
         lag(version) OVER w IS DISTINCT FROM version AS c_version,
         lag(last_ip_address) OVER w IS DISTINCT FROM last_ip_address AS c_last_ip_address,
         lag(last_external_ip_address) OVER w IS DISTINCT FROM last_external_ip_address AS c_last_external_ip_address,
         lag(agent_version) OVER w IS DISTINCT FROM agent_version AS c_agent_version,
         lag(os_build) OVER w IS DISTINCT FROM os_build AS c_os_build,
         lag(health_status) OVER w IS DISTINCT FROM health_status AS c_health_status,
         lag(device_value) OVER w IS DISTINCT FROM device_value AS c_device_value,
         lag(rbac_group_id) OVER w IS DISTINCT FROM rbac_group_id AS c_rbac_group_id,
         lag(rbac_group_name) OVER w IS DISTINCT FROM rbac_group_name AS c_rbac_group_name,
         lag(risk_score) OVER w IS DISTINCT FROM risk_score AS c_risk_score,
         lag(exposure_level) OVER w IS DISTINCT FROM exposure_level AS c_exposure_level,
         lag(is_aad_joined) OVER w IS DISTINCT FROM is_aad_joined AS c_is_aad_joined,
         lag(aad_device_id) OVER w IS DISTINCT FROM aad_device_id AS c_aad_device_id,
         lag(machine_tags) OVER w IS DISTINCT FROM machine_tags AS c_machine_tags,
         lag(defender_av_status) OVER w IS DISTINCT FROM defender_av_status AS c_defender_av_status,
         lag(onboarding_status) OVER w IS DISTINCT FROM onboarding_status AS c_onboarding_status,
         lag(os_architecture) OVER w IS DISTINCT FROM os_architecture AS c_os_architecture,
         lag(managed_by) OVER w IS DISTINCT FROM managed_by AS c_managed_by,
         lag(managed_by_status) OVER w IS DISTINCT FROM managed_by_status AS c_managed_by_status,
         lag(ip_addresses) OVER w IS DISTINCT FROM ip_addresses AS c_ip_addresses,
         lag(vm_metadata) OVER w IS DISTINCT FROM vm_metadata AS c_vm_metadata
  FROM machines_history
  WINDOW w AS (PARTITION BY id ORDER BY snapshot)
)
SELECT snapshot, field, count(*) AS changes
FROM (
  SELECT snapshot, 'mergedIntoMachineId' AS field FROM h WHERE had AND c_merged_into_machine_id
  UNION ALL SELECT snapshot, 'isPotentialDuplication' AS field FROM h WHERE had AND c_is_potential_duplication
  UNION ALL SELECT snapshot, 'isExcluded' AS field FROM h WHERE had AND c_is_excluded
  UNION ALL SELECT snapshot, 'exclusionReason' AS field FROM h WHERE had AND c_exclusion_reason
  UNION ALL SELECT snapshot, 'computerDnsName' AS field FROM h WHERE had AND c_computer_dns_name
  UNION ALL SELECT snapshot, 'firstSeen' AS field FROM h WHERE had AND c_first_seen
  UNION ALL SELECT snapshot, 'osPlatform' AS field FROM h WHERE had AND c_os_platform
  UNION ALL SELECT snapshot, 'osVersion' AS field FROM h WHERE had AND c_os_version
  UNION ALL SELECT snapshot, 'osProcessor' AS field FROM h WHERE had AND c_os_processor
  UNION ALL SELECT snapshot, 'version' AS field FROM h WHERE had AND c_version
  UNION ALL SELECT snapshot, 'lastIpAddress' AS field FROM h WHERE had AND c_last_ip_address
  UNION ALL SELECT snapshot, 'lastExternalIpAddress' AS field FROM h WHERE had AND c_last_external_ip_address
  UNION ALL SELECT snapshot, 'agentVersion' AS field FROM h WHERE had AND c_agent_version
  UNION ALL SELECT snapshot, 'osBuild' AS field FROM h WHERE had AND c_os_build
  UNION ALL SELECT snapshot, 'healthStatus' AS field FROM h WHERE had AND c_health_status
  UNION ALL SELECT snapshot, 'deviceValue' AS field FROM h WHERE had AND c_device_value
  UNION ALL SELECT snapshot, 'rbacGroupId' AS field FROM h WHERE had AND c_rbac_group_id
  UNION ALL SELECT snapshot, 'rbacGroupName' AS field FROM h WHERE had AND c_rbac_group_name
  UNION ALL SELECT snapshot, 'riskScore' AS field FROM h WHERE had AND c_risk_score
  UNION ALL SELECT snapshot, 'exposureLevel' AS field FROM h WHERE had AND c_exposure_level
  UNION ALL SELECT snapshot, 'isAadJoined' AS field FROM h WHERE had AND c_is_aad_joined
  UNION ALL SELECT snapshot, 'aadDeviceId' AS field FROM h WHERE had AND c_aad_device_id
  UNION ALL SELECT snapshot, 'machineTags' AS field FROM h WHERE had AND c_machine_tags
  UNION ALL SELECT snapshot, 'defenderAvStatus' AS field FROM h WHERE had AND c_defender_av_status
  UNION ALL SELECT snapshot, 'onboardingStatus' AS field FROM h WHERE had AND c_onboarding_status
  UNION ALL SELECT snapshot, 'osArchitecture' AS field FROM h WHERE had AND c_os_architecture
  UNION ALL SELECT snapshot, 'managedBy' AS field FROM h WHERE had AND c_managed_by
  UNION ALL SELECT snapshot, 'managedByStatus' AS field FROM h WHERE had AND c_managed_by_status
  UNION ALL SELECT snapshot, 'ipAddresses' AS field FROM h WHERE had AND c_ip_addresses
  UNION ALL SELECT snapshot, 'vmMetadata' AS field FROM h WHERE had AND c_vm_metadata
) t
GROUP BY 1, 2
ORDER BY 1, 2
