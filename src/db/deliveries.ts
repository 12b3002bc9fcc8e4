// The API's statements on the queue rows (deliveries). Claiming, renewing and recording
// results are the worker's (src/worker/queue.ts); new rows are inserted with their
// message by insertMessages (db/messages.ts).
import type { Db, Tx } from "./client.ts";

export function countDeliveriesOf(tx: Db | Tx, messageId: string): Promise<number> {
  return tx.delivery.count({ where: { messageId } });
}

/**
 * Moves a message's queue rows that no worker has started (pending, attempts = 0) to
 * 'cancelled'; returns how many. A worker's claim raises attempts under the row lock,
 * so a claimed row is not counted.
 */
export function cancelUntouchedDeliveries(tx: Db | Tx, messageId: string): Promise<number> {
  return tx.$executeRawUnsafe(
    `UPDATE deliveries SET state = 'cancelled', lease_owner = NULL
      WHERE message_id = $1::uuid AND state = 'pending' AND attempts = 0`, messageId);
}
