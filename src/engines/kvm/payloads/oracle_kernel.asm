; The oracle kernel (engines/kvm/oracle.ts): a tiny 64-bit supervisor that runs 32-bit snippets in
; ring 3, in a compatibility-mode code segment, and reports their registers, flags and faults. On
; hardware KVM (VMX/SVM) the snippet's results are the hardware's: an oracle for the software CPU.
; On PVM hosts this non-enlightened kernel stays in PVM's bootstrap mode, where KVM's instruction
; emulator runs all guest code (see oracle.ts).
; Assembled by scripts/gen-oracle-kernel.mjs into oracle_kernel.ts (nasm, flat, ORG 0x1000).
;
; Protocol with the VMM (all at guest-physical = virtual, identity-mapped):
;   CTX  0x16000: eax ebx ecx edx esi edi ebp esp eflags (9 dwords): the snippet's initial state
;   RES  0x16100: eax ebx ecx edx esi edi ebp esp eflags vector errcode eip cs cr2 (14 dwords)
;   The kernel enters the snippet, takes the trap that ends it, stores RES, writes port 0xf5
;   (the VMM stops the vCPU there), and on the next KVM_RUN starts the next job from CTX.
; Snippet's memory (ring 3, user pages only in the 2 MiB page at 0x400000):
;   0x400000 code (the snippet, then HLT: the #GP(0) it raises at that address means "done")
;   0x500000 data window (the caller's data page(s), up to 64 KiB)
;   everything else is supervisor-only: a snippet access there faults (#PF).
; Segments: CS 0x1b (32-bit code, DPL 3), DS/ES/FS/GS/SS 0x23 (flat data, DPL 3).
%include "long_mode_entry.inc"
%include "traps.inc"
CTX  equ DATA
RES  equ DATA + 0x100
TSS  equ 0x18000
USER_CODE equ 0x400000

main64:
  ; Page tables: only the 2 MiB page at 0x400000 stays user-accessible.
  mov rdi, PD0
  mov ecx, 2048
.pd:
  and qword [rdi], ~4
  add rdi, 8
  loop .pd
  or qword [PD0 + 2 * 8], 4
  mov rax, cr3
  mov cr3, rax
  ; 64-bit TSS with RSP0 = STACK (the stack traps from ring 3 arrive on)
  mov rdi, TSS
  xor eax, eax
  mov ecx, 104 / 4
  rep stosd
  mov qword [TSS + 4], STACK
  mov word [TSS + 102], 104
  mov rax, TSS
  mov rdx, rax
  shl rdx, 16
  mov r8, 0xffffff0000
  and rdx, r8
  mov rcx, rax
  shr rcx, 24
  and rcx, 0xff
  shl rcx, 56
  or rdx, rcx
  or rdx, 103
  mov rcx, 0x89
  shl rcx, 40
  or rdx, rcx
  mov [tss_desc], rdx
  mov dword [tss_desc + 8], 0
  mov ax, 0x30
  ltr ax
  mov edx, 3
  call install_traps

job:
  mov rsp, STACK
  ; IRETQ frame to the snippet: SS, RSP, RFLAGS, CS, RIP
  push 0x23
  mov eax, [CTX + 28]
  push rax
  mov eax, [CTX + 32]
  and eax, 0x0cd5           ; CF PF AF ZF SF DF OF from the caller
  or eax, 2
  push rax
  push 0x1b
  push USER_CODE
  mov ax, 0x23
  mov ds, ax
  mov es, ax
  mov fs, ax
  mov gs, ax
  mov eax, [CTX + 0]
  mov ebx, [CTX + 4]
  mov ecx, [CTX + 8]
  mov edx, [CTX + 12]
  mov esi, [CTX + 16]
  mov edi, [CTX + 20]
  mov ebp, [CTX + 24]
  iretq

trap_common:
  mov [RES + 0], eax
  mov [RES + 4], ebx
  mov [RES + 8], ecx
  mov [RES + 12], edx
  mov [RES + 16], esi
  mov [RES + 20], edi
  mov [RES + 24], ebp
  mov rax, [rsp]            ; vector
  mov [RES + 36], eax
  mov rax, [rsp + 8]        ; error code
  mov [RES + 40], eax
  mov rax, [rsp + 16]       ; RIP
  mov [RES + 44], eax
  mov rax, [rsp + 24]       ; CS
  mov [RES + 48], eax
  mov rax, [rsp + 32]       ; RFLAGS
  mov [RES + 32], eax
  mov rax, [rsp + 40]       ; RSP
  mov [RES + 28], eax
  mov rax, cr2
  mov [RES + 52], eax
  mov ax, 0x10
  mov ds, ax
  mov es, ax
  xor eax, eax
  out 0xf5, al              ; job done: the VMM stops here and resumes us for the next job
  jmp job
