/**
 * virtio-vsock packets (virtio 1.2 §5.10.6; include/uapi/linux/virtio_vsock.h): a 44-byte
 * little-endian header, then `len` bytes of payload for OP_RW.
 *
 *   0 le64 src_cid   8 le64 dst_cid   16 le32 src_port   20 le32 dst_port   24 le32 len
 *  28 le16 type     30 le16 op       32 le32 flags      36 le32 buf_alloc  40 le32 fwd_cnt
 */
export const VSOCK_HDR_SIZE = 44;
/** Largest payload of one packet (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE): bounds what we copy from the guest. */
export const VSOCK_MAX_PKT_PAYLOAD = 64 * 1024;
/** The host's CID (VMADDR_CID_HOST). */
export const VSOCK_HOST_CID = 2n;

export const VSOCK_TYPE_STREAM = 1;

export const enum VsockOp {
  Invalid = 0,
  Request = 1,
  Response = 2,
  Rst = 3,
  Shutdown = 4,
  Rw = 5,
  CreditUpdate = 6,
  CreditRequest = 7,
}

/** OP_SHUTDOWN flags. */
export const VSOCK_SHUTDOWN_RCV = 1;
export const VSOCK_SHUTDOWN_SEND = 2;

export interface VsockPacket {
  srcCid: bigint;
  dstCid: bigint;
  srcPort: number;
  dstPort: number;
  type: number;
  op: VsockOp;
  flags: number;
  bufAlloc: number;
  fwdCnt: number;
  /** Payload (OP_RW only); `len` in the header is its length. */
  payload: Uint8Array;
}

export function encodeHeader(p: VsockPacket): Uint8Array {
  const out = new Uint8Array(VSOCK_HDR_SIZE);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, p.srcCid, true);
  dv.setBigUint64(8, p.dstCid, true);
  dv.setUint32(16, p.srcPort >>> 0, true);
  dv.setUint32(20, p.dstPort >>> 0, true);
  dv.setUint32(24, p.payload.length, true);
  dv.setUint16(28, p.type, true);
  dv.setUint16(30, p.op, true);
  dv.setUint32(32, p.flags >>> 0, true);
  dv.setUint32(36, p.bufAlloc >>> 0, true);
  dv.setUint32(40, p.fwdCnt >>> 0, true);
  return out;
}

/** Decodes a header; `len` is returned separately (the caller bounds it before reading the payload). */
export function decodeHeader(b: Uint8Array): { packet: VsockPacket; len: number } {
  const dv = new DataView(b.buffer, b.byteOffset, VSOCK_HDR_SIZE);
  return {
    len: dv.getUint32(24, true),
    packet: {
      srcCid: dv.getBigUint64(0, true),
      dstCid: dv.getBigUint64(8, true),
      srcPort: dv.getUint32(16, true),
      dstPort: dv.getUint32(20, true),
      type: dv.getUint16(28, true),
      op: dv.getUint16(30, true) as VsockOp,
      flags: dv.getUint32(32, true),
      bufAlloc: dv.getUint32(36, true),
      fwdCnt: dv.getUint32(40, true),
      payload: new Uint8Array(0),
    },
  };
}
