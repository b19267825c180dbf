import Schemas

extension PackageManifest {
    /// Every version `agent` can run: the versions of its enabled manifest entries (a manifest may list an agent
    /// once per version, each with its own prompt, provider, model and threshold) and its rollout's stable and
    /// canary versions. An eval run may pin only one of these (the router checks, the eval service too).
    public func versions(of agent: String, rollout: RolloutSettings?) -> Set<String> {
        var versions = Set(agents.filter { $0.enabled && $0.agent == agent }.map(\.version))
        if let rollout {
            versions.insert(rollout.stableVersion)
            versions.insert(rollout.canaryVersion)
        }
        versions.remove("")
        return versions
    }
}
