import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { ComposeError } from "../../../src/container/compose/errors.js";
import { parseComposeFile, projectName, startOrder } from "../../../src/container/compose/file.js";

const dir = mkdtempSync(join(tmpdir(), "vessel-compose-file-"));
mkdirSync(join(dir, "web"));
after(() => rmSync(dir, { recursive: true, force: true }));
const file = join(dir, "compose.yaml");
const parse = (text: string, env: NodeJS.ProcessEnv = {}) => parseComposeFile(text, file, env);

const APP = `
name: shop
services:
  web:
    build:
      context: ./web
      dockerfile: Web.dockerfile
      args:
        GREETING: hi
    ports:
      - "8080:80"
      - 127.0.0.1:5353:53/udp
      - target: 81
        published: 8081
    volumes:
      - ./site:/srv:ro
      - data:/data
      - type: bind
        source: /tmp
        target: /host-tmp
    environment:
      - MODE=prod
      - FROM_CALLER
    command: httpd -f -p "80"
    depends_on: [db]
    restart: unless-stopped
  db:
    image: busybox
    environment:
      USER: admin
      PORT: 5432
      EMPTY:
    command: ["sh", "-c", "sleep 1000"]
volumes:
  data:
`;

test("compose file: services with build, ports, volumes, environment, command, depends_on, restart", () => {
  const f = parse(APP, { FROM_CALLER: "yes" });
  assert.equal(f.name, "shop");
  assert.deepEqual(
    f.services.map((s) => s.name),
    ["web", "db"],
  );
  const [web, db] = f.services;
  assert.deepEqual(web!.build, {
    context: join(dir, "web"),
    dockerfile: join(dir, "web", "Web.dockerfile"),
    args: { GREETING: "hi" },
  });
  assert.deepEqual(
    web!.ports.map((p) => p.spec),
    ["0.0.0.0:8080:80/tcp", "127.0.0.1:5353:53/udp", "0.0.0.0:8081:81/tcp"],
  );
  assert.deepEqual(web!.volumes, [
    { source: join(dir, "site"), named: false, target: "/srv", readonly: true, line: 16 },
    { source: "data", named: true, target: "/data", readonly: false, line: 17 },
    { source: "/tmp", named: false, target: "/host-tmp", readonly: false, line: 18 },
  ]);
  assert.deepEqual(web!.environment, ["MODE=prod", "FROM_CALLER=yes"]);
  assert.deepEqual(web!.command, ["httpd", "-f", "-p", "80"]);
  assert.deepEqual(web!.dependsOn, [{ service: "db", condition: "service_started", line: 25 }]);
  assert.equal(web!.restart, "unless-stopped");
  assert.deepEqual(
    db!.environment,
    ["USER=admin", "PORT=5432"],
    "a key with no value and no caller's value is left out",
  );
  assert.deepEqual(db!.command, ["sh", "-c", "sleep 1000"]);
  assert.deepEqual(f.volumes, ["data"]);
  assert.deepEqual(
    startOrder(f).map((s) => s.name),
    ["db", "web"],
  );
});

test("compose file: unknown keys are errors naming the key and its line", () => {
  const bad = (text: string, re: RegExp) =>
    assert.throws(
      () => parse(text),
      (e: unknown) => e instanceof ComposeError && re.test(e.message),
    );
  bad(
    "services:\n  web:\n    image: busybox\n    imagee: x\n",
    /compose.yaml line 4: services.web.imagee: unknown key "imagee"/,
  );
  bad(
    "services:\n  web:\n    image: busybox\nnetworks:\n  front: {}\n",
    /line 4: networks: unknown key "networks" \(top level supports/,
  );
  bad(
    "services:\n  web:\n    build:\n      context: .\n      cache_from: [x]\n",
    /line 5: services.web.build.cache_from: unknown key/,
  );
  bad(
    "services:\n  web:\n    image: busybox\n    ports:\n      - 80\n",
    /line 5: services.web.ports\[0\]: "80" publishes no host port/,
  );
  bad("services:\n  web: {}\n", /line 2: services.web: a service needs an image or a build/);
  bad(
    "services:\n  web:\n    image: busybox\n    volumes: [data:/d]\n",
    /line 4: services.web.volumes: volume "data" is not declared/,
  );
  bad(
    "services:\n  web:\n    image: busybox\n    depends_on: [db]\n",
    /line 4: services.web.depends_on: no service named "db"/,
  );
  bad(
    "services:\n  web:\n    image: busybox\n    restart: sometimes\n",
    /line 4: .*unknown restart policy "sometimes"/,
  );
  bad("services:\n  web:\n    image: [busybox\n", /line 4: not valid YAML: Flow sequence/);
  bad(
    "services:\n  web:\n    image: a\n  web:\n    image: b\n",
    /line 4: not valid YAML: Map keys must be unique/,
  );
  bad("version: '3'\n", /services: the file has no services/);
});

test("compose file: a port published twice is a clash naming both services and lines", () => {
  assert.throws(
    () =>
      parse(
        "services:\n  a:\n    image: busybox\n    ports: ['8080:80']\n  b:\n    image: busybox\n    ports: ['127.0.0.1:8080:81']\n",
      ),
    (e: unknown) =>
      e instanceof ComposeError &&
      e.code === "COMPOSE_PORT_CLASH" &&
      /line 7: services.b.ports: host port 8080\/tcp is already published by service "a" \(line 4\)/.test(
        e.message,
      ),
  );
  // the same number over udp is another port
  parse("services:\n  a:\n    image: busybox\n    ports: ['53:53/udp', '53:53']\n");
});

test("compose file: depends_on cycles name the line that closes them; conditions are checked", () => {
  assert.throws(
    () =>
      parse(
        "services:\n  a:\n    image: busybox\n    depends_on: [b]\n  b:\n    image: busybox\n    depends_on:\n      a:\n        condition: service_started\n",
      ),
    /line 8: services.b.depends_on: services depend on each other in a cycle \(a -> b -> a\)/,
  );
  const f = parse(
    "services:\n  a:\n    image: busybox\n    depends_on:\n      b: {condition: service_healthy}\n  b:\n    image: busybox\n",
  );
  assert.equal(f.services[0]!.dependsOn[0]!.condition, "service_healthy");
  assert.throws(
    () =>
      parse(
        "services:\n  a:\n    image: busybox\n    depends_on:\n      b: {condition: up}\n  b:\n    image: busybox\n",
      ),
    /line 5: services.a.depends_on.b.condition: unknown condition "up"/,
  );
});

test("compose file: interpolation from the environment and .env, $$ and required variables", () => {
  writeFileSync(join(dir, ".env"), "TAG=from-dotenv\n# comment\nPORT='9090'\n");
  try {
    const f = parse(
      // biome-ignore lint/suspicious/noTemplateCurlyInString: compose interpolation, not a template
      "services:\n  a:\n    image: busybox:${TAG}\n    ports: ['${PORT}:80']\n    environment: ['X=$${HOME}', 'Y=${UNSET:-dflt}']\n",
      { TAG: "latest" },
    );
    assert.equal(f.services[0]!.image, "busybox:latest", "the environment wins over .env");
    assert.equal(f.services[0]!.ports[0]!.hostPort, 9090);
    // biome-ignore lint/suspicious/noTemplateCurlyInString: compose interpolation, not a template
    assert.deepEqual(f.services[0]!.environment, ["X=${HOME}", "Y=dflt"]);
    assert.throws(
      // biome-ignore lint/suspicious/noTemplateCurlyInString: compose interpolation, not a template
      () => parse("services:\n  a:\n    image: ${IMG:?set IMG to the image}\n"),
      /line 3: services.a.image: variable IMG is required: set IMG to the image/,
    );
  } finally {
    rmSync(join(dir, ".env"));
  }
});

test("compose project names are compose's: lower case, from -p, name: or the directory", () => {
  assert.equal(projectName("My_App-2"), "my_app-2");
  assert.equal(projectName("web.site"), "website");
  assert.throws(() => projectName("--"), /cannot be a project name/);
});
