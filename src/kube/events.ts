import { GROUP, VERSION } from "../api/v1alpha1/common.js";
import type { Logger } from "../util/log.js";
import type { KubeClient, PolicyKind } from "./client.js";

/** The source component of the controller's Events. */
const CONTROLLER_COMPONENT = "static-egress-controller";
/** Longer messages are cut: an Event is a note for a person, not a log. */
const MAX_MESSAGE = 1000;

/** The object an Event is about. */
export interface EventSubject {
  apiVersion: string;
  kind: string;
  name: string;
  namespace?: string;
  uid?: string;
}

/**
 * The one Event recorder. Recording never throws: an Event is a courtesy to the person reading
 * `kubectl describe`, so a failed write is logged and the reconcile goes on.
 */
export class EventRecorder {
  constructor(
    private readonly client: Pick<KubeClient, "createObjectEvent">,
    private readonly log: Logger,
    private readonly component = CONTROLLER_COMPONENT,
  ) {}

  async record(subject: EventSubject, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    try {
      await this.client.createObjectEvent({
        involved: subject,
        type,
        reason,
        message: message.slice(0, MAX_MESSAGE),
        component: this.component,
      });
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, "could not record an event");
    }
  }

  /** An Event about one of our objects (an EgressPolicy needs its namespace). */
  async recordOurs(
    kind: PolicyKind,
    name: string,
    ref: { namespace?: string; uid?: string },
    type: "Normal" | "Warning",
    reason: string,
    message: string,
  ): Promise<void> {
    if (kind === "EgressPolicy" && !ref.namespace) {
      this.log.warn({ err: `an Event about EgressPolicy ${name} needs its namespace` }, "could not record an event");
      return;
    }
    const subject: EventSubject = {
      apiVersion: `${GROUP}/${VERSION}`,
      kind,
      name,
      ...(kind === "EgressPolicy" ? { namespace: ref.namespace } : {}),
      ...(ref.uid ? { uid: ref.uid } : {}),
    };
    await this.record(subject, type, reason, message);
  }
}
