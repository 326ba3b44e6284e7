import { CAPABILITIES } from "./capabilities.js";
import { PROPAGATION_OPTIONS } from "./plan.js";
import { SECCOMP_ACTIONS, SECCOMP_ARCHES, SECCOMP_OPS } from "./seccomp_names.js";
import { OCI_VERSION } from "./state.js";

/** `features` output (runtime-spec features.md): what this runtime implements. */
export function features(): Record<string, unknown> {
  return {
    ociVersionMin: "1.0.0",
    ociVersionMax: OCI_VERSION,
    hooks: ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
    mountOptions: [
      "async",
      "atime",
      "bind",
      "defaults",
      "dev",
      "diratime",
      "dirsync",
      "exec",
      "lazytime",
      "mand",
      "noatime",
      "nodev",
      "nodiratime",
      "noexec",
      "nolazytime",
      "nomand",
      "norelatime",
      "nostrictatime",
      "nosuid",
      "nosymfollow",
      "rbind",
      "relatime",
      "remount",
      "ro",
      "rw",
      "strictatime",
      "suid",
      "symfollow",
      "sync",
      ...PROPAGATION_OPTIONS,
    ],
    linux: {
      namespaces: ["cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time"],
      capabilities: Object.keys(CAPABILITIES),
      cgroup: { v1: true, v2: true, systemd: false, systemdUser: false, rdma: false },
      seccomp: {
        enabled: true,
        actions: SECCOMP_ACTIONS.filter((a) => a !== "SCMP_ACT_NOTIFY"),
        operators: SECCOMP_OPS,
        archs: SECCOMP_ARCHES.filter((a) => a.includes("X86") || a.includes("X32")),
        knownFlags: [
          "SECCOMP_FILTER_FLAG_TSYNC",
          "SECCOMP_FILTER_FLAG_LOG",
          "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        ],
        supportedFlags: [
          "SECCOMP_FILTER_FLAG_TSYNC",
          "SECCOMP_FILTER_FLAG_LOG",
          "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        ],
      },
      apparmor: { enabled: false },
      selinux: { enabled: false },
      intelRdt: { enabled: false },
    },
    annotations: { "org.vessel.runtime": "vessel-runc" },
  };
}
