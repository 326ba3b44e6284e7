import assert from "node:assert/strict";
import { test } from "node:test";
import {
  mergeEnv,
  parseBytes,
  parseCpus,
  parseEnv,
  parsePort,
  parseRestart,
  parseVolume,
} from "../../../src/container/manager/options.js";
import { parseDockerArgs } from "../../../src/cli/docker_args.js";
import { UsageError } from "../../../src/errors.js";

test("-v accepts host paths, named volumes and :ro", () => {
  assert.deepEqual(parseVolume("/srv/data:/data:ro"), {
    source: "/srv/data",
    named: false,
    target: "/data",
    readonly: true,
  });
  assert.deepEqual(parseVolume("cache:/var/cache"), {
    source: "cache",
    named: true,
    target: "/var/cache",
    readonly: false,
  });
});

test("-v rejects malformed values, quoting them", () => {
  for (const bad of ["/a", "/a:rel", "/a:/b:rw:x", "/a:/b:rx", ":/b", "bad name:/b", "/a:/"]) {
    assert.throws(
      () => parseVolume(bad),
      (e: unknown) => e instanceof UsageError && e.message.includes(`"${bad}"`),
      bad,
    );
  }
});

test("-p parses HOST:CTR, IP:HOST:CTR, /tcp and /udp; rejects the rest", () => {
  assert.deepEqual(parsePort("8080:80"), {
    hostIp: "0.0.0.0",
    hostPort: 8080,
    containerPort: 80,
    protocol: "tcp",
  });
  assert.deepEqual(parsePort("127.0.0.1:8080:80/tcp"), {
    hostIp: "127.0.0.1",
    hostPort: 8080,
    containerPort: 80,
    protocol: "tcp",
  });
  assert.deepEqual(parsePort("10.0.0.5:5353:53/udp"), {
    hostIp: "10.0.0.5",
    hostPort: 5353,
    containerPort: 53,
    protocol: "udp",
  });
  assert.equal(parsePort("5353:53/udp").protocol, "udp");
  for (const bad of [
    "80",
    "0:80",
    "70000:80",
    "a:80",
    "8080:80/sctp",
    "8080:80/",
    "x.y:1:2",
    "1:2:3:4",
    "1.2.3.256:1:2",
  ]) {
    assert.throws(() => parsePort(bad), UsageError, bad);
  }
});

test("sizes, cpus, restart policies and env", () => {
  assert.equal(parseBytes("64m"), 64 * 1024 * 1024);
  assert.equal(parseBytes("1g"), 1024 ** 3);
  assert.throws(() => parseBytes("1k"), /minimum/);
  assert.throws(() => parseBytes("lots"), UsageError);
  assert.equal(parseCpus("0.5"), 0.5);
  assert.throws(() => parseCpus("-1"), UsageError);
  assert.deepEqual(parseRestart("on-failure:3"), { name: "on-failure", maxRetries: 3 });
  assert.throws(() => parseRestart("sometimes"), UsageError);
  assert.equal(parseEnv("A=1"), "A=1");
  assert.equal(parseEnv("HOME_X", { HOME_X: "v" }), "HOME_X=v");
  assert.equal(parseEnv("MISSING_X", {}), undefined);
  assert.deepEqual(mergeEnv(["PATH=/bin", "A=1"], ["A=2"]), ["PATH=/bin", "A=2"]);
});

test("docker-style flags stop at the image; short flags combine", () => {
  const p = parseDockerArgs(
    ["-it", "--rm", "-e", "A=1", "-eB=2", "--name=x", "busybox", "sh", "-c", "echo -e"],
    {
      interactive: { short: "i" },
      tty: { short: "t" },
      rm: {},
      env: { short: "e", value: true, multi: true },
      name: { value: true },
    },
    true,
  );
  assert.deepEqual(p.flags, { interactive: true, tty: true, rm: true, env: ["A=1", "B=2"], name: "x" });
  assert.deepEqual(p.positionals, ["busybox", "sh", "-c", "echo -e"]);
  assert.throws(() => parseDockerArgs(["--bogus"], {}, true), /unknown flag: --bogus/);
});

test("docker-style flag errors name the flag: unknown shorthand, missing value", () => {
  const spec = { name: { value: true }, env: { short: "e", value: true }, rm: {} };
  assert.throws(() => parseDockerArgs(["-x"], spec, true), /unknown shorthand flag: 'x' in -x/);
  assert.throws(() => parseDockerArgs(["--name"], spec, true), /flag --name needs a value/);
  assert.throws(() => parseDockerArgs(["--rm", "-e"], spec, true), /flag -e needs a value/);
  assert.deepEqual(parseDockerArgs(["--rm=false", "--", "-e"], spec, false), {
    flags: { rm: false },
    positionals: ["-e"],
  });
});
