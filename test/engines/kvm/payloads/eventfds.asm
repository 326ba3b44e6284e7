; irqfd and ioeventfd: devices and vCPUs meeting without a round trip through user space.
;  1. IRQ4 (PIC vector 0x24) gets a handler that counts at DATA+0x20 and sends EOI.
;  2. The guest writes port 0xf6 (an ordinary exit): the test's device answers by signalling an
;     eventfd registered with KVM_IRQFD for GSI 4; the kernel raises IRQ4 by itself.
;  3. The guest halts until the interrupt has arrived, then writes port 0x510 five times: that
;     port is a KVM_IOEVENTFD, so these writes signal an eventfd inside the kernel and never exit.
;  4. Reports the interrupt count on 0xf7 and stops (0xf5).
%include "long_mode_entry.inc"
main64:
  mov edi, 0x24
  mov rsi, irq4
  xor edx, edx
  call set_gate
  call load_idt
  mov al, 0x11
  out 0x20, al
  mov al, 0x20
  out 0x21, al
  mov al, 0x04
  out 0x21, al
  mov al, 0x01
  out 0x21, al
  mov al, 0xef              ; unmask IRQ4 only
  out 0x21, al
  mov al, 0xff
  out 0xa1, al
  mov dword [DATA + 0x20], 0
  sti
  mov al, 1
  out 0xf6, al              ; "please interrupt me through the irqfd"
.wait:
  cmp dword [DATA + 0x20], 0
  jne .got
  hlt
  jmp .wait
.got:
  cli
  mov dx, 0x510
  mov ecx, 5
.kick:
  mov al, cl
  out dx, al                ; ioeventfd: no exit
  loop .kick
  mov eax, [DATA + 0x20]
  out 0xf7, eax
  xor eax, eax
  out 0xf5, al
  hlt

irq4:
  push rax
  inc dword [DATA + 0x20]
  mov al, 0x20
  out 0x20, al
  pop rax
  iretq
