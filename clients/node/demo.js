#!/usr/bin/env node
// The seed story from Node.js against a running local cluster (`mycarenet-cluster up`):
//
//   node clients/node/demo.js --cluster var/cluster/cluster.json [--wait 30]
//
// GP B logs in, consults the demo patient (GP A holds the DMG), notifies (B takes it over); GP A logs in,
// finds the closure in the mailbox and confirms it; the demo pharmacist, in its pharmacy's session (the
// pharmacy's key and the pharmacist's second signature), reads the patient's insurability and rights (a
// payment commitment). First, two calls the trust model refuses (no session;
// a key registration with the shared client certificate), with their decoded google.rpc.Status. Reads the addresses, the client certificate (mutual
// TLS), the providers' keys and the demo identities from the cluster description. Prints one JSON object
// per step on stdout; exits 1 on the first failure.

import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

import { connect, toDate as toDateOf } from "./mycarenet.js";

const { values: args } = parseArgs({
  options: {
    cluster: { type: "string", default: "var/cluster/cluster.json" },
    wait: { type: "string", default: "30" },
  },
});

const desc = JSON.parse(readFileSync(args.cluster, "utf8"));
const address = (role) => desc.processes.find((p) => p.role === role).address;
const tls = desc.tls ?? {};
const keyOf = (inami) => readFileSync(path.join(desc.keys, `${inami}.pem`), "utf8");
const { patient, gp_a: gpA, gp_b: gpB, pharmacist, pharmacy } = desc.demo;
const today = desc.today;

const step = (name, fields) => console.log(JSON.stringify({ step: name, ...fields }));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function client() {
  return connect({
    hub: address("hub"),
    ehealth: address("ehealth"),
    ca: tls.ca,
    cert: tls.client_cert,
    key: tls.client_key,
  });
}

/** The step's fields for a call that must be refused (the rich error decoded from the trailers). */
async function refused(name, promise) {
  try {
    await promise;
    step(name, { refused: false });
  } catch (error) {
    step(name, { refused: true, status: error.status, reason: error.reason, codes: error.codes });
  }
}

async function main() {
  const b = client();
  const a = client();
  const p = client();
  try {
    // The shared provider-software certificate proves no one: no session, no consult; no key registration.
    await refused(
      "refused_without_session",
      b.call(b.dmg, "ConsultDmg", { patient: { niss: patient }, request_date: toDateOf(today) }, { auth: false }),
    );
    const { publicKey } = generateKeyPairSync("ed25519");
    await refused(
      "refused_credential",
      b.call(
        b.auth,
        "RegisterCredential",
        {
          subject: { kind: "SUBJECT_KIND_PROVIDER", id: gpA },
          public_key_pem: publicKey.export({ type: "spki", format: "pem" }),
        },
        { auth: false },
      ),
    );

    const sessionB = await b.login(gpB, keyOf(gpB));
    step("login", { subject: gpB, session_id: sessionB.session_id });

    const seen = await b.consult({ niss: patient, date: today });
    step("consult", {
      patient,
      insurer_code: seen.insurer_code,
      holder: seen.holding?.holder?.inami ?? null,
      payment_made_this_year: seen.payment_made_this_year,
    });

    const notified = await b.notify({ niss: patient, contactDate: today });
    step("notify", {
      patient,
      holder: notified.holder.inami,
      payment: notified.payment,
      end_date: notified.end_date,
    });

    await a.login(gpA, keyOf(gpA));
    step("login", { subject: gpA });
    const deadline = Date.now() + Number(args.wait) * 1000;
    let closures = [];
    while (Date.now() < deadline) {
      const pending = await a.messages({ kinds: ["MESSAGE_KIND_CLOSURE"] });
      closures = pending.filter((m) => m.closure?.patient?.niss === patient);
      if (closures.length) break;
      await sleep(300);
    }
    if (!closures.length) throw new Error(`no closure for ${patient} in ${gpA}'s mailbox`);
    const [closure] = closures;
    step("mailbox", {
      message_id: closure.message_id,
      kind: closure.kind,
      end_date: closure.closure.end_date,
      new_holder: closure.closure.new_holder?.inami ?? null,
    });

    const confirmed = await a.confirm([closure.message_id]);
    const left = (await a.messages()).filter((m) => m.message_id === closure.message_id);
    step("confirm", { confirmed_count: confirmed.confirmed_count, still_pending: left.length });

    // The demo pharmacist, in the pharmacy's session: the patient's insurability, then the rights with a
    // payment commitment.
    await p.login(pharmacy, keyOf(pharmacy), {
      kind: "SUBJECT_KIND_ORGANISATION",
      pharmacist: [pharmacist, keyOf(pharmacist)],
    });
    const member = await p.insurability({ niss: patient, date: today });
    step("insurability", {
      insurer_code: member.member_data.insurer_code,
      ct: member.member_data.insurability.map((i) => `${i.status.ct1}/${i.status.ct2}`),
      dmg_holder: member.member_data.dmg_holder_inami,
    });
    const rights = await p.rights({ niss: patient, dispensingDate: today });
    step("rights", {
      coverage_start: rights.commitment.coverage.start,
      coverage_end: rights.commitment.coverage.end,
      agreement_number: rights.commitment.agreement_number,
    });
  } finally {
    a.close();
    b.close();
    p.close();
  }
}

main().catch((error) => {
  step("error", { status: error.status ?? null, message: error.message });
  process.exitCode = 1;
});
