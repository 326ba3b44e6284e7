import assert from "node:assert/strict";
import { test } from "node:test";
import { compilePattern, DockerIgnore } from "../../../src/container/build/dockerignore.js";

const ig = (text: string) => new DockerIgnore(text.split("\n"));

test(".dockerignore: a pattern excludes a path and everything under a directory it matches", () => {
  const d = ig("# comment\nnode_modules\n/build/\n*.log\n");
  assert.equal(d.excludes("node_modules"), true);
  assert.equal(d.excludes("node_modules/x/y.js"), true);
  assert.equal(d.excludes("build/out.o"), true);
  assert.equal(d.excludes("a.log"), true);
  assert.equal(d.excludes("src/a.log"), false, "* stops at /: *.log is only the top level");
  assert.equal(d.excludes("src/node_modules"), false, "patterns are anchored at the context's root");
  assert.equal(d.excludes("# comment"), false);
  assert.equal(d.excludes("Dockerfile"), false);
});

test(".dockerignore: ** matches any number of directories, zero included", () => {
  const d = ig("**/*.tmp\ndocs/**\n**/cache");
  assert.equal(d.excludes("a.tmp"), true);
  assert.equal(d.excludes("x/y/z.tmp"), true);
  assert.equal(d.excludes("docs/a/b.md"), true);
  assert.equal(d.excludes("src/deep/cache/f"), true);
  assert.equal(d.excludes("src/cached"), false);
  assert.deepEqual(compilePattern("a/**/b"), /^a\/(.*\/)?b$/);
});

test(".dockerignore: ! makes exceptions and the last matching line decides", () => {
  const d = ig("*.md\n!README.md\nREADME-secret.md\nsecrets\n!secrets/public.key");
  assert.equal(d.excludes("CHANGES.md"), true);
  assert.equal(d.excludes("README.md"), false);
  assert.equal(d.excludes("README-secret.md"), true);
  assert.equal(d.excludes("secrets/private.key"), true);
  assert.equal(d.excludes("secrets/public.key"), false);
  assert.equal(d.hasExceptions, true);
  assert.equal(ig("!x\nx").excludes("x"), true, "a later pattern overrides an earlier exception");
});

test(".dockerignore: ? and character classes, escapes, and cleaned paths", () => {
  const d = ig("file?.txt\n[a-c].bin\n./tmp/../out/\n\\*star");
  assert.equal(d.excludes("file1.txt"), true);
  assert.equal(d.excludes("file10.txt"), false);
  assert.equal(d.excludes("b.bin"), true);
  assert.equal(d.excludes("d.bin"), false);
  assert.equal(d.excludes("out/x"), true);
  assert.equal(d.excludes("*star"), true);
  assert.equal(d.excludes("xstar"), false);
  assert.equal(ig("").empty, true);
});
