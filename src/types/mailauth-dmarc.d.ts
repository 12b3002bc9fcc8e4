// mailauth ships no declaration for its DMARC policy discovery (RFC 9989 4.10), which
// the domain check uses; this is the part of it we call.
declare module "mailauth/lib/dmarc/get-dmarc-record.js" {
  interface DmarcRecord {
    v: string;
    p?: string;
    sp?: string;
    adkim?: string;
    aspf?: string;
    /** The record's text. */
    rr: string;
    /** Where it was found: the domain itself, or its Organizational Domain. */
    recordDomain: string;
    isOrgRecord: boolean;
  }
  /** `resolver(name, "TXT")` answers TXT records as lists of strings, or throws with an ENOTFOUND/ENODATA code for none. */
  export default function getDmarcRecord(domain: string, resolver: (name: string, type: string) => Promise<string[][]>): Promise<DmarcRecord | false>;
}
