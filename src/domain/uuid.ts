// Whether a string is a UUID as ids are written here (8-4-4-4-12 hex), e.g. to tell an id
// typed at the CLI from a name before asking the database.
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const isUuid = (s: string) => UUID.test(s);
