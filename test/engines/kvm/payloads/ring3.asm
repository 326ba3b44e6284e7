; A drop to ring 3 and back. Ring 0 sets up a 64-bit TSS (RSP0: the stack the CPU switches to on
; the way back to ring 0), gates for every exception and for INT 0x80 (DPL 3), and IRETQs to
; 64-bit user code (CS 0x2b, SS 0x23). The user code (run by KVM's instruction emulator on PVM, see oracle.ts)
; computes 6*7 and executes the instruction selected by the byte at DATA+16:
;   0: INT 0x80     1: HLT (privileged: #GP(0))     2: OUT (CPL 3 > IOPL 0: #GP(0))   3: UD2 (#UD)
; Every trap reports on port 0xf6: vector, error code, the privilege level of the interrupted
; CS, and RAX (the user's 42); then it stops the VM (port 0xf5).
; Findings on PVM: HLT, OUT and UD2 in ring 3 are delivered as #GP/#GP/#UD through our IDT, but
; INT 0x80 is not delivered as vector 0x80 (see the test).
%include "long_mode_entry.inc"
%include "traps.inc"
TSS equ 0x18000
main64:
  mov rdi, TSS
  xor eax, eax
  mov ecx, 104 / 4
  rep stosd
  mov qword [TSS + 4], STACK
  mov word [TSS + 102], 104  ; I/O map base beyond the limit: no I/O bitmap
  ; 64-bit available TSS descriptor at GDT 0x30: limit 103, base TSS, type 9, P
  mov rax, TSS
  mov rdx, rax
  shl rdx, 16
  mov r8, 0xffffff0000
  and rdx, r8               ; base 23:0 -> bits 39:16
  mov rcx, rax
  shr rcx, 24
  and rcx, 0xff
  shl rcx, 56               ; base 31:24 -> bits 63:56
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
  ; IRETQ frame: SS, RSP, RFLAGS, CS, RIP
  push 0x23
  push 0x70000
  push 0x2                  ; IF=0, IOPL=0
  push 0x2b
  push user_code
  iretq

user_code:
  mov eax, 6
  mov ecx, 7
  imul eax, ecx
  movzx ebx, byte [DATA + 16]
  cmp ebx, 1
  je .hlt
  cmp ebx, 2
  je .out
  cmp ebx, 3
  je .ud2
  int 0x80
  jmp $
.hlt:
  hlt
  jmp $
.out:
  out 0xf6, al
  jmp $
.ud2:
  ud2
  jmp $

trap_common:
  mov rbx, rax
  mov rax, [rsp]
  out 0xf6, eax             ; vector
  mov rax, [rsp + 8]
  out 0xf6, eax             ; error code
  mov rax, [rsp + 24]
  and eax, 3
  out 0xf6, eax             ; CPL we came from
  mov eax, ebx
  out 0xf6, eax             ; user's RAX
  xor eax, eax
  out 0xf5, al
  hlt
