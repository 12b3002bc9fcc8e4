// A Postgres cluster of the test's own, for what the shared server on 5432 cannot show: it
// trusts every local connection, so a wrong password is accepted there. This one is a
// private cluster (pg-cluster.ts) that asks for scram-sha-256 passwords.
import { createPrivateCluster } from "./pg-cluster.ts";

export interface PrivatePostgres {
  port: number;
  /** A URL for `user` with `password` on the `postgres` database. */
  url(user: string, password: string): string;
  stop(): Promise<void>;
}

/** Starts a cluster whose superuser `postgres` has `password`. */
export async function startPrivatePostgres(password: string): Promise<PrivatePostgres> {
  const cluster = await createPrivateCluster({ password });
  return {
    port: cluster.port,
    url: (user, pw) => `postgresql://${encodeURIComponent(user)}:${encodeURIComponent(pw)}@127.0.0.1:${cluster.port}/postgres`,
    stop: () => cluster.destroy(),
  };
}
