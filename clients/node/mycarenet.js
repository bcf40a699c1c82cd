// A small Node.js client of mycarenet-mesh, built only from the contracts in protos/ at run time
// (@grpc/proto-loader; no generated code): eHealth login by an Ed25519 challenge signature, then the
// hub's DmgService (consult, notify) and MailboxService (messages, confirm).
//
//   import { connect } from "./mycarenet.js";
//   const client = connect({ hub: "127.0.0.1:7400", ehealth: "127.0.0.1:7401", ca, cert, key });
//   await client.login("19876543004", privateKeyPem);
//   const seen = await client.consult({ niss: "85073003328" });

import { randomUUID, createPrivateKey, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const PROTOS = path.resolve(HERE, "..", "..", "protos");

const FILES = [
  "mycarenet/ehealth/v1/auth.proto",
  "mycarenet/dmg/v1/dmg_service.proto",
  "mycarenet/dmg/v1/mailbox_service.proto",
  "mycarenet/insurability/v1/insurability_service.proto",
];

/** The gRPC package tree loaded from the .proto files (field names as in the contracts). */
export function loadContracts(protosDir = PROTOS) {
  const definition = protoLoader.loadSync(FILES, {
    includeDirs: [protosDir],
    keepCase: true, // snake_case field names, exactly as in the .proto files
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition);
}

/** googleapis' rich-error messages (google.rpc.Status and its details), from the copies in protos/google/. */
export function loadErrorTypes(protosDir = PROTOS) {
  const root = new protobuf.Root();
  // google/protobuf/*.proto are built into protobufjs; everything else is under protos/.
  root.resolvePath = (_origin, target) => (protobuf.common[target] ? target : path.join(protosDir, target));
  root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"]);
  return {
    Status: root.lookupType("google.rpc.Status"),
    byUrl: {
      "type.googleapis.com/google.rpc.ErrorInfo": root.lookupType("google.rpc.ErrorInfo"),
      "type.googleapis.com/google.rpc.BadRequest": root.lookupType("google.rpc.BadRequest"),
      "type.googleapis.com/google.rpc.RetryInfo": root.lookupType("google.rpc.RetryInfo"),
    },
  };
}

let errorTypes = null;

/** The google.rpc.Status details of a failed call: { reason, codes, violations, retryAfterSeconds }. */
export function richError(metadata) {
  const raw = metadata?.get("grpc-status-details-bin")?.[0];
  const out = { reason: null, codes: [], violations: [], retryAfterSeconds: null };
  if (!raw) return out;
  errorTypes ??= loadErrorTypes();
  const status = errorTypes.Status.decode(raw);
  for (const any of status.details) {
    const type = errorTypes.byUrl[any.type_url ?? any.typeUrl];
    if (!type) continue;
    const detail = type.toObject(type.decode(any.value), { longs: Number });
    if (detail.reason !== undefined) {
      out.reason = detail.reason;
      const codes = detail.metadata?.mycarenet_codes;
      if (codes) out.codes = codes.split(",").map(Number);
    } else if (detail.fieldViolations) {
      out.violations = detail.fieldViolations.map((v) => ({
        field: v.field,
        code: Number(v.description.split(":")[0]) || null,
        description: v.description,
      }));
    } else if (detail.retryDelay) {
      out.retryAfterSeconds = Number(detail.retryDelay.seconds ?? 0) + (detail.retryDelay.nanos ?? 0) / 1e9;
    }
  }
  return out;
}

/** A failed call: the gRPC status (number and name), the server's message, and the rich details (reason,
 * MyCareNet codes, field violations) decoded from the google.rpc.Status in the trailers. */
export class MyCareNetError extends Error {
  constructor(error) {
    super(`${grpc.status[error.code] ?? error.code}: ${error.details}`);
    this.code = error.code;
    this.status = grpc.status[error.code];
    this.details = error.details;
    this.metadata = error.metadata;
    Object.assign(this, richError(error.metadata));
  }
}

/** A civil date of the contracts from "YYYY-MM-DD". */
export function toDate(iso) {
  const [year, month, day] = iso.split("-").map(Number);
  return { year, month, day };
}

/** A fresh requester reference (the idempotency key of a request). */
export function newReference() {
  return `node-${randomUUID().replaceAll("-", "").slice(0, 20)}`;
}

export class Client {
  constructor({ hub, ehealth, credentials, timeoutSeconds = 10, protosDir = PROTOS }) {
    const contracts = loadContracts(protosDir);
    const ehealthV1 = contracts.mycarenet.ehealth.v1;
    const dmgV1 = contracts.mycarenet.dmg.v1;
    this.auth = new ehealthV1.AuthService(ehealth, credentials);
    this.dmg = new dmgV1.DmgService(hub, credentials);
    this.mailbox = new dmgV1.MailboxService(hub, credentials);
    this.insurabilityService = new contracts.mycarenet.insurability.v1.InsurabilityService(hub, credentials);
    this.timeoutSeconds = timeoutSeconds;
    this.session = null;
  }

  /** Call a unary method with a deadline (and the session token unless `auth` is false). */
  call(stub, method, request, { auth = true } = {}) {
    const metadata = new grpc.Metadata();
    if (auth) {
      if (!this.session) throw new Error("call login() first");
      metadata.set("authorization", `Bearer ${this.session.token}`);
    }
    const deadline = new Date(Date.now() + this.timeoutSeconds * 1000);
    return new Promise((resolve, reject) => {
      stub[method](request, metadata, { deadline }, (error, reply) =>
        error ? reject(new MyCareNetError(error)) : resolve(reply),
      );
    });
  }

  /** Log in at eHealth: sign the challenge's nonce with the subject's Ed25519 private key (PEM). A pharmacy's
   * session (kind "SUBJECT_KIND_ORGANISATION") is opened by one of its pharmacists, who signs a second
   * challenge: `pharmacist: [inami, privateKeyPem]` (seed 003 §8.2.2.1-3). */
  async login(subjectId, privateKeyPem, { kind = "SUBJECT_KIND_PROVIDER", pharmacist = null } = {}) {
    const challenge = await this.call(
      this.auth,
      "CreateChallenge",
      { subject: { kind, id: subjectId } },
      { auth: false },
    );
    // Ed25519 signs the message itself: no digest algorithm (null).
    const signature = sign(null, challenge.nonce, createPrivateKey(privateKeyPem));
    const request = { challenge_id: challenge.challenge_id, signature };
    if (pharmacist) {
      const [userId, userKeyPem] = pharmacist;
      const second = await this.call(
        this.auth,
        "CreateChallenge",
        { subject: { kind: "SUBJECT_KIND_PROVIDER", id: userId } },
        { auth: false },
      );
      request.user_challenge_id = second.challenge_id;
      request.user_signature = sign(null, second.nonce, createPrivateKey(userKeyPem));
    }
    const reply = await this.call(this.auth, "CreateSession", request, { auth: false });
    this.session = { token: reply.token, session_id: reply.session_id, subject_id: subjectId };
    return this.session;
  }

  /** Consult a patient's DMG (by NISS) at `date` ("YYYY-MM-DD", mandatory). */
  consult({ niss, date, reference = newReference() }) {
    return this.call(this.dmg, "ConsultDmg", {
      requester_reference: reference,
      patient: { niss },
      request_date: toDate(date),
    });
  }

  /** The insurer's file on a patient (MemberData) at `date` ("YYYY-MM-DD"). */
  insurability({ niss, date, reference = newReference() }) {
    return this.call(this.insurabilityService, "GetMemberData", {
      requester_reference: reference,
      patient: { niss },
      date: toDate(date),
    });
  }

  /** A pharmacist's rights at a dispensing date, with the insurer's payment commitment. */
  rights({ niss, dispensingDate, reference = newReference() }) {
    return this.call(this.insurabilityService, "ConsultRights", {
      requester_reference: reference,
      patient: { niss },
      dispensing_date: toDate(dispensingDate),
    });
  }

  /** Notify the opening or takeover of a patient's DMG after a contact. */
  notify({ niss, contactDate, nomenclatureCode = "101076", reference = newReference() }) {
    return this.call(this.dmg, "NotifyDmg", {
      requester_reference: reference,
      patient: { niss },
      contact_date: toDate(contactDate),
      nomenclature_code: nomenclatureCode,
    });
  }

  /** Every pending mailbox message (all pages), oldest first. */
  async messages({ kinds = [] } = {}) {
    const out = [];
    let page_token = "";
    do {
      const page = await this.call(this.mailbox, "GetMessages", { kinds, page_token });
      out.push(...page.messages);
      page_token = page.next_page_token;
    } while (page_token);
    return out;
  }

  /** Confirm stored messages: they are never returned again. */
  confirm(messageIds) {
    return this.call(this.mailbox, "ConfirmMessages", { message_ids: messageIds });
  }

  close() {
    for (const stub of [this.auth, this.dmg, this.mailbox, this.insurabilityService]) stub.close();
  }
}

/** A client; mutual TLS when `ca`, `cert` and `key` (PEM file paths) are given, plaintext otherwise. */
export function connect({ hub, ehealth, ca, cert, key, timeoutSeconds }) {
  const credentials =
    ca && cert && key
      ? grpc.credentials.createSsl(readFileSync(ca), readFileSync(key), readFileSync(cert))
      : grpc.credentials.createInsecure();
  return new Client({ hub, ehealth, credentials, timeoutSeconds });
}
