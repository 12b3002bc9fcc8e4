import type { AnyRoute } from "../route.ts";
import sendMessage from "./sendMessage.ts";
import sendMessageBatch from "./sendMessageBatch.ts";
import getMessage from "./getMessage.ts";
import getMessageEvents from "./getMessageEvents.ts";
import listMessages from "./listMessages.ts";
import cancelMessage from "./cancelMessage.ts";
import listEvents from "./listEvents.ts";
import createWebhook from "./createWebhook.ts";
import listWebhooks from "./listWebhooks.ts";
import getWebhook from "./getWebhook.ts";
import updateWebhook from "./updateWebhook.ts";
import deleteWebhook from "./deleteWebhook.ts";
import rotateWebhookSecret from "./rotateWebhookSecret.ts";
import testWebhook from "./testWebhook.ts";
import listWebhookDeliveries from "./listWebhookDeliveries.ts";
import retryWebhookDeliveries from "./retryWebhookDeliveries.ts";
import createDomain from "./createDomain.ts";
import listDomains from "./listDomains.ts";
import getDomain from "./getDomain.ts";
import deleteDomain from "./deleteDomain.ts";
import verifyDomain from "./verifyDomain.ts";
import rotateDkim from "./rotateDkim.ts";
import { healthz, readyz } from "./health.ts";

/** Every operation of the API; openapi.yaml is generated from this list. */
export const ROUTES: AnyRoute[] = [sendMessage, sendMessageBatch, listMessages, getMessage, getMessageEvents, cancelMessage, listEvents, createDomain, listDomains, getDomain, deleteDomain, verifyDomain, rotateDkim, createWebhook, listWebhooks, getWebhook, updateWebhook, deleteWebhook, rotateWebhookSecret, testWebhook, listWebhookDeliveries, retryWebhookDeliveries, healthz, readyz];
