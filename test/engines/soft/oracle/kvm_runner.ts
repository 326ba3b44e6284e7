/**
 * Runs snippets on the real CPU through KVM (helper A's `src/engines/kvm/oracle.ts`: ring 3, in a
 * 32-bit compatibility-mode segment under a small 64-bit payload kernel). Placeholder until that
 * module lands: reports itself unavailable, so the oracle tests run on the software CPU alone.
 */
import type { SnippetInput, SnippetResult, SnippetRunner } from "./snippet.js";

export class KvmRunner implements SnippetRunner {
  readonly name = "kvm";

  async unavailable(): Promise<string | null> {
    return "src/engines/kvm/oracle.ts has not landed yet";
  }

  async run(_input: SnippetInput): Promise<SnippetResult> {
    throw new Error("KVM oracle not available");
  }
}
