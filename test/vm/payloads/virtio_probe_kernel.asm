; A stand-in kernel (64-bit entry) that finds the machine's first virtio-mmio device the way a
; driver starts (virtio 1.2, 4.2.2: MagicValue 0x74726976 "virt" at +0, Version 2 at +4,
; DeviceID at +8) in slot 0 (layout.ts VIRTIO_MMIO_START = 0xd0000000), and exits with the
; DeviceID as its status (4 = entropy, 2 = block), or 0xff if there is no virtio device.
; boot/ identity-maps only the first GiB, so it maps 3-4 GiB itself: a page directory at
; 0x50000 (free low memory) with 2 MiB uncached pages, in PDPT entry 3 (layout.ts PDPTE_START).
bits 64
PDPT equ 0xa000
PD3  equ 0x50000
  mov rdi, PD3
  mov rax, 0xc0000000 | 0x9b  ; P | RW | PWT | PCD | PS
  mov ecx, 512
.fill:
  mov [rdi], rax
  add rax, 0x200000
  add rdi, 8
  loop .fill
  mov qword [PDPT + 3 * 8], PD3 | 3
  mov rax, cr3
  mov cr3, rax
  mov rbx, 0xd0000000
  mov eax, [rbx]
  cmp eax, 0x74726976
  jne .none
  mov eax, [rbx + 4]
  cmp eax, 2
  jne .none
  mov eax, [rbx + 8]
  jmp .exit
.none:
  mov al, 0xff
.exit:
  mov dx, 0xf5
  out dx, al
.hang:
  hlt
  jmp .hang
